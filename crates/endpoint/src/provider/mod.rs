//! Providers: how an endpoint gets managers. Only the local provider exists so far.

pub mod local;
