//! Shared-token authentication: one secret for the whole testbed, read from `--token-file`
//! or the `MURI_TOKEN` environment variable, sent as the `x-muri-token` metadata entry.

use std::path::Path;

use anyhow::Context;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Metadata key that carries the token.
pub const TOKEN_HEADER: &str = "x-muri-token";
/// Environment variable read when no token file is given.
pub const TOKEN_ENV: &str = "MURI_TOKEN";

/// The shared secret. `None` inside means "no token configured": servers then accept every
/// call (only sensible on a single-user machine) and clients send nothing.
#[derive(Clone, Default)]
pub struct Token(Option<String>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.write_str(if self.0.is_some() {
            "Token(set)"
        } else {
            "Token(none)"
        })
    }
}

impl Token {
    pub fn new(secret: impl Into<String>) -> Token {
        Token(Some(secret.into()))
    }

    pub fn none() -> Token {
        Token(None)
    }

    /// The secret, for handing to child processes (through `MURI_TOKEN`).
    pub fn secret(&self) -> Option<&str> {
        self.0.as_deref()
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// `--token-file` wins over `MURI_TOKEN`; surrounding whitespace is ignored. An empty
    /// file is an error, because it almost certainly means a setup mistake.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Token> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading token file {}", path.display()))?;
            let secret = text.trim();
            anyhow::ensure!(!secret.is_empty(), "token file {} is empty", path.display());
            return Ok(Token::new(secret));
        }
        match std::env::var(TOKEN_ENV) {
            Ok(v) if !v.trim().is_empty() => Ok(Token::new(v.trim())),
            _ => Ok(Token::none()),
        }
    }

    fn matches(&self, presented: Option<&[u8]>) -> bool {
        match (&self.0, presented) {
            (None, _) => true,
            (Some(secret), Some(p)) => constant_time_eq(secret.as_bytes(), p),
            (Some(_), None) => false,
        }
    }
}

/// Compares without an early exit, so response time does not leak the prefix length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Server side: refuses calls whose token is wrong or missing.
#[derive(Clone, Debug)]
pub struct CheckToken(pub Token);

impl Interceptor for CheckToken {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let presented = req.metadata().get(TOKEN_HEADER).map(|v| v.as_bytes());
        if self.0.matches(presented) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("missing or wrong x-muri-token"))
        }
    }
}

/// Client side: attaches the token to every call.
#[derive(Clone, Debug)]
pub struct AddToken(pub Token);

impl Interceptor for AddToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(secret) = &self.0 .0 {
            let value = MetadataValue::try_from(secret.as_str())
                .map_err(|_| Status::invalid_argument("token is not valid ASCII metadata"))?;
            req.metadata_mut().insert(TOKEN_HEADER, value);
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_or_missing_token_is_refused() {
        let mut check = CheckToken(Token::new("s3cret"));
        assert!(check.call(Request::new(())).is_err());
        let mut bad = Request::new(());
        bad.metadata_mut()
            .insert(TOKEN_HEADER, "nope".parse().unwrap());
        assert_eq!(
            check.call(bad).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let good = AddToken(Token::new("s3cret"))
            .call(Request::new(()))
            .unwrap();
        assert!(check.call(good).is_ok());
    }

    #[test]
    fn no_configured_token_accepts_everything() {
        assert!(CheckToken(Token::none()).call(Request::new(())).is_ok());
    }
}
