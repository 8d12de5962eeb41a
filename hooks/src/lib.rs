//! Inbound webhooks (filled in by the webhook issue).
