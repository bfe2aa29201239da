//! Shared-token authentication: one secret for the whole testbed, read from `--token_file`
//! or the `MURI_TOKEN` environment variable, sent as the `x-muri-token` metadata entry.
//!
//! Servers compare SHA-256 digests of the configured and the presented token in constant
//! time, so neither the secret's length nor a matching prefix shows in the response time.

use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Metadata key that carries the token.
pub const TOKEN_HEADER: &str = "x-muri-token";
/// Environment variable read when no token file is given.
pub const TOKEN_ENV: &str = "MURI_TOKEN";

/// The shared secret. `None` inside means "no token configured": servers then accept every
/// call (daemons start so only with `--no_auth`, see [`Token::for_daemon`]) and clients send
/// nothing.
#[derive(Clone, Default)]
pub struct Token(Option<Secret>);

#[derive(Clone)]
struct Secret {
    text: String,
    /// SHA-256 of `text`, computed once: what presented tokens are compared against.
    digest: [u8; 32],
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

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
        let text = secret.into();
        let digest = sha256(text.as_bytes());
        Token(Some(Secret { text, digest }))
    }

    pub fn none() -> Token {
        Token(None)
    }

    /// The secret, for handing to child processes (through `MURI_TOKEN`).
    pub fn secret(&self) -> Option<&str> {
        self.0.as_ref().map(|s| s.text.as_str())
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// `--token_file` wins over `MURI_TOKEN`; surrounding whitespace is ignored. An empty
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

    /// What a daemon (scheduler, worker) runs with: a configured token, or none only when
    /// `--no_auth` says so explicitly (then anyone who reaches the port controls the
    /// testbed, hence the warning).
    pub fn for_daemon(self, no_auth: bool) -> anyhow::Result<Token> {
        match (self.is_set(), no_auth) {
            (true, false) => Ok(self),
            (true, true) => anyhow::bail!(
                "--no_auth conflicts with the configured token (--token_file or {TOKEN_ENV}): drop one of them"
            ),
            (false, false) => anyhow::bail!(
                "no token: pass --token_file FILE or set {TOKEN_ENV} (the same secret on every process), \
                 or --no_auth to accept unauthenticated calls"
            ),
            (false, true) => {
                tracing::warn!(
                    "--no_auth: authentication is off; every process that reaches this port is accepted"
                );
                Ok(self)
            }
        }
    }

    /// Digests first, then a constant-time comparison of the two fixed-size digests: the
    /// time taken depends on neither the presented token's length nor its content.
    fn matches(&self, presented: Option<&[u8]>) -> bool {
        match (&self.0, presented) {
            (None, _) => true,
            (Some(secret), Some(p)) => bool::from(secret.digest.ct_eq(&sha256(p))),
            (Some(_), None) => false,
        }
    }
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
        if let Some(secret) = self.0.secret() {
            let value = MetadataValue::try_from(secret)
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
    fn tokens_of_other_lengths_or_prefixes_are_refused() {
        let token = Token::new("s3cret");
        for presented in ["", "s3cre", "s3cret ", "s3cret-and-more", "S3cret"] {
            assert!(!token.matches(Some(presented.as_bytes())), "{presented:?}");
        }
        assert!(token.matches(Some(b"s3cret")));
    }

    #[test]
    fn daemons_need_a_token_or_no_auth() {
        let missing = Token::none().for_daemon(false).unwrap_err().to_string();
        assert!(missing.contains("--no_auth"), "{missing}");
        assert!(Token::none().for_daemon(true).is_ok());
        assert!(Token::new("x").for_daemon(false).is_ok());
        assert!(Token::new("x").for_daemon(true).is_err());
    }

    #[test]
    fn no_configured_token_accepts_everything() {
        assert!(CheckToken(Token::none()).call(Request::new(())).is_ok());
    }
}
