//! The states of a deploy and the transitions between them, in one place.
//!
//! `queued -> fetching -> building -> rolling -> live`, or `failed | rolled_back | superseded |
//! interrupted | cancelled`. A live deploy can still become `rolled_back` (the bake window).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployState {
    Queued,
    Fetching,
    Building,
    Rolling,
    Live,
    Failed,
    RolledBack,
    Superseded,
    Interrupted,
    Cancelled,
}

impl DeployState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployState::Queued => "queued",
            DeployState::Fetching => "fetching",
            DeployState::Building => "building",
            DeployState::Rolling => "rolling",
            DeployState::Live => "live",
            DeployState::Failed => "failed",
            DeployState::RolledBack => "rolled_back",
            DeployState::Superseded => "superseded",
            DeployState::Interrupted => "interrupted",
            DeployState::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeployState::Live
                | DeployState::Failed
                | DeployState::RolledBack
                | DeployState::Superseded
                | DeployState::Interrupted
                | DeployState::Cancelled
        )
    }

    /// Whether a deploy may go from `self` to `next`.
    pub fn can_become(self, next: DeployState) -> bool {
        use DeployState::*;
        match (self, next) {
            (Queued, Fetching | Rolling | Superseded | Cancelled | Interrupted | Failed | Live) => true,
            (Fetching, Building | Live | Failed | Cancelled | Interrupted) => true,
            (Building, Rolling | Failed | Cancelled | Interrupted) => true,
            (Rolling, Live | Failed | RolledBack | Interrupted) => true,
            // The bake window: a live release that crash-loops is rolled back.
            (Live, RolledBack) => true,
            _ => false,
        }
    }

    /// Cancelling is possible before the workers are touched.
    pub fn can_cancel(self) -> bool {
        matches!(self, DeployState::Queued | DeployState::Fetching | DeployState::Building)
    }
}

#[cfg(test)]
mod tests {
    use super::DeployState::*;

    #[test]
    fn the_happy_path_and_its_exits() {
        let path = [Queued, Fetching, Building, Rolling, Live];
        for w in path.windows(2) {
            assert!(w[0].can_become(w[1]), "{:?} -> {:?}", w[0], w[1]);
        }
        assert!(!Live.can_become(Failed));
        assert!(!Rolling.can_become(Cancelled), "the roll is not cancellable");
        assert!(!Failed.can_become(Live));
        assert!(Live.can_become(RolledBack));
        assert!(Building.can_cancel() && !Rolling.can_cancel());
        assert!(Superseded.is_final() && !Rolling.is_final());
    }
}
