//! Errors as the API answers them: a status and `{code, message, hint}`.
//!
//! Each domain error says once, in its [`Answer`] impl below, which [`ErrorCode`] it is and what
//! to do about it; the code decides the status ([`status_of`]). Handlers only write `?`. Nothing
//! here reads a message to find out what it meant: the hint is a field from the error's type,
//! never cut out of its words.

use crate::deploy::DeployError;
use crate::deploy::poll::CheckError;
use crate::locks::LockError;
use crate::source::{BadRef, SourceError};
use crate::store::StoreError;
use crate::supervisor::{NotReady, SupervisorError};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use deployer_wire::{ApiError, ErrorCode};

/// What an error means to an API client.
pub(crate) trait Answer: std::fmt::Display {
    fn code(&self) -> ErrorCode;
    /// What went wrong, for people (without the hint).
    fn message(&self) -> String {
        self.to_string()
    }
    /// What to do about it.
    fn hint(&self) -> Option<String> {
        None
    }
}

/// The status every answer with `code` has. One table, so a script can rely on either.
pub(crate) fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Conflict
        | ErrorCode::NoRepo
        | ErrorCode::ReloadFailed
        | ErrorCode::StartFailed
        | ErrorCode::BranchNotFound => StatusCode::CONFLICT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::GitUnreachable => StatusCode::BAD_GATEWAY,
        ErrorCode::Stopping => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal | ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiErr(StatusCode, ApiError);

impl ApiErr {
    /// An answer with `code`'s status.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> ApiErr {
        ApiErr::with_status(status_of(code), code, message)
    }

    /// An answer whose status the HTTP framework chose (it may differ from the code's: 415 is
    /// a `bad_request` too).
    pub(crate) fn with_status(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiErr {
        ApiErr(status, ApiError { code, message: message.into(), hint: None })
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> ApiErr {
        self.1.hint = Some(hint.into());
        self
    }

    /// The agent failed: the message says how, there is nothing for the client to do.
    pub(crate) fn internal(e: impl std::fmt::Display) -> ApiErr {
        ApiErr::new(ErrorCode::Internal, e.to_string())
    }

    pub(crate) fn code(&self) -> ErrorCode {
        self.1.code
    }
}

/// Every answer goes through here: a 500 is the agent's own failure (a full disk, a broken
/// database), so it is logged where the operator looks, not only told to the client.
impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        if self.0 == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(status = self.0.as_u16(), code = %self.1.code, message = %self.1.message, "API answered a server error");
        }
        (self.0, Json(self.1)).into_response()
    }
}

impl<E: Answer> From<E> for ApiErr {
    fn from(e: E) -> ApiErr {
        let mut err = ApiErr::new(e.code(), e.message());
        err.1.hint = e.hint();
        err
    }
}

const APPS_HINT: &str = "`GET /v1/apps` (`deployer ls`) lists the apps";
const LOGS_HINT: &str = "`deployer logs <app>` shows what the workers printed";

impl Answer for SupervisorError {
    fn code(&self) -> ErrorCode {
        match self {
            SupervisorError::UnknownApp(_) => ErrorCode::NotFound,
            _ => ErrorCode::Internal,
        }
    }
    fn hint(&self) -> Option<String> {
        matches!(self, SupervisorError::UnknownApp(_)).then(|| APPS_HINT.into())
    }
}

const STOPPING_HINT: &str = "ask again once the agent is back (`deployer status` shows when)";

impl Answer for NotReady {
    fn code(&self) -> ErrorCode {
        match self {
            NotReady::Stopping => ErrorCode::Stopping,
            NotReady::NotRecorded(_) => ErrorCode::Internal,
            _ => ErrorCode::StartFailed,
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            NotReady::Stopping => STOPPING_HINT.into(),
            NotReady::NotRecorded(_) => {
                "the agent's log says why its state database cannot be written (a full disk?)".into()
            }
            _ => LOGS_HINT.into(),
        })
    }
}

impl Answer for StoreError {
    fn code(&self) -> ErrorCode {
        ErrorCode::Internal
    }
}

impl Answer for BadRef {
    fn code(&self) -> ErrorCode {
        ErrorCode::BadRequest
    }
    fn message(&self) -> String {
        self.problem()
    }
    fn hint(&self) -> Option<String> {
        Some(BadRef::HINT.into())
    }
}

impl Answer for DeployError {
    fn code(&self) -> ErrorCode {
        match self {
            DeployError::App(e) => e.code(),
            DeployError::NotFromGit(_) => ErrorCode::NoRepo,
            DeployError::BadRef(e) => e.code(),
            DeployError::NoSuchRelease(_) | DeployError::NotFound(_) => ErrorCode::NotFound,
            DeployError::CannotCancel { .. } => ErrorCode::Conflict,
            DeployError::State(e) => e.code(),
            DeployError::Stopping => ErrorCode::Stopping,
            DeployError::UnknownEnvSet { .. } => ErrorCode::BadRequest,
        }
    }
    fn message(&self) -> String {
        match self {
            DeployError::BadRef(e) => e.message(),
            _ => self.to_string(),
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            DeployError::App(e) => e.hint(),
            DeployError::NotFromGit(_) => Some(
                "add `repo:` and `branch:` to the app in the agent's config; an app without one runs its `cwd` \
                 and takes new code with `deployer reload`"
                    .into(),
            ),
            DeployError::BadRef(e) => e.hint(),
            DeployError::NoSuchRelease(_) => Some("`deployer releases <app>` lists the releases on disk".into()),
            DeployError::NotFound(_) => Some("`deployer history <app>` lists an app's deploys".into()),
            DeployError::Stopping => Some(STOPPING_HINT.into()),
            DeployError::UnknownEnvSet { name, .. } => {
                Some(format!("add `env_sets: {{ {name}: {{ KEY: value }} }}` to the app in the agent's config"))
            }
            DeployError::CannotCancel { .. } | DeployError::State(_) => None,
        }
    }
}

impl Answer for SourceError {
    fn code(&self) -> ErrorCode {
        match self {
            SourceError::Fetch { .. } | SourceError::HostKey { .. } | SourceError::BadUrl { .. } => {
                ErrorCode::GitUnreachable
            }
            SourceError::BranchNotFound { .. } => ErrorCode::BranchNotFound,
            SourceError::BadRef(_) => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        }
    }
    fn message(&self) -> String {
        self.problem()
    }
    fn hint(&self) -> Option<String> {
        SourceError::hint(self)
    }
}

impl Answer for CheckError {
    fn code(&self) -> ErrorCode {
        match self {
            CheckError::App(e) => e.code(),
            CheckError::Git(e) => e.code(),
            CheckError::Crashed(_) => ErrorCode::Internal,
        }
    }
    fn message(&self) -> String {
        match self {
            CheckError::App(e) => e.message(),
            CheckError::Git(e) => e.message(),
            CheckError::Crashed(_) => self.to_string(),
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            CheckError::App(e) => e.hint(),
            CheckError::Git(e) => Answer::hint(e),
            CheckError::Crashed(_) => None,
        }
    }
}

impl Answer for LockError {
    fn code(&self) -> ErrorCode {
        match self {
            LockError::HeldByOther { .. } => ErrorCode::Conflict,
            _ => ErrorCode::BadRequest,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            LockError::HeldByOther { .. } => {
                Some("wait until its holder releases it, or until it lapses unless renewed".into())
            }
            _ => None,
        }
    }
}

/// A webhook delivery refused. Its words quote no header value and no body.
impl Answer for hooks::Rejection {
    fn code(&self) -> ErrorCode {
        match self.kind() {
            hooks::RejectionKind::Unauthorized => ErrorCode::Unauthorized,
            hooks::RejectionKind::TooLarge => ErrorCode::TooLarge,
            hooks::RejectionKind::Malformed => ErrorCode::BadRequest,
        }
    }
    fn hint(&self) -> Option<String> {
        hooks::Rejection::hint(self).map(String::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_the_status_its_name_says() {
        for &code in ErrorCode::KNOWN {
            let status = status_of(code);
            assert!(status.is_client_error() || status.is_server_error(), "{code}: {status}");
        }
        let no_repo = ApiErr::from(DeployError::NotFromGit("web".into()));
        assert_eq!((no_repo.0, no_repo.code()), (StatusCode::CONFLICT, ErrorCode::NoRepo));
        assert!(no_repo.1.hint.as_deref().is_some_and(|h| h.contains("`repo:`")), "{no_repo:?}");
    }

    /// The hint of a bad ref is its own field: the message says what is wrong, once.
    #[test]
    fn hints_are_fields_not_lines_of_the_message() {
        let bad = crate::source::validate_ref("-rf").unwrap_err();
        for err in [ApiErr::from(DeployError::BadRef(bad.clone())), ApiErr::from(CheckError::Git(bad.into()))] {
            assert_eq!(err.code(), ErrorCode::BadRequest);
            assert!(!err.1.message.contains("hint"), "{err:?}");
            assert_eq!(err.1.hint.as_deref(), Some(BadRef::HINT));
        }
        let unsigned = ApiErr::from(hooks::Rejection::MissingSignature { header: "X-Hub-Signature-256".into() });
        assert_eq!(unsigned.0, StatusCode::UNAUTHORIZED);
        assert!(!unsigned.1.message.contains("hint"), "{unsigned:?}");
        assert!(unsigned.1.hint.is_some(), "{unsigned:?}");
    }
}
