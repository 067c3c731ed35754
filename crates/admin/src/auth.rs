//! Who may change things. Read-only endpoints are open (the listener is on loopback by
//! default). Mutating ones need `Authorization: Bearer <admin.token>` once a token is
//! configured; without one they are accepted only from loopback, so an admin listener opened
//! to the network never takes changes from it unauthenticated.

use std::net::SocketAddr;

use axum::http::HeaderMap;

use crate::error::ApiError;
use crate::state::AdminState;

/// Checks a mutating request.
pub fn check_mutation(
    state: &AdminState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    match &state.token {
        Some(token) => {
            let given = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            match given {
                Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
                Some(_) => Err(ApiError::Unauthorized("wrong admin token".into())),
                None => Err(ApiError::Unauthorized(
                    "this endpoint changes the cluster: send Authorization: Bearer <admin.token>"
                        .into(),
                )),
            }
        }
        None if peer.ip().is_loopback() => Ok(()),
        None => Err(ApiError::Forbidden(
            "changes are accepted from loopback only until admin.token is set".into(),
        )),
    }
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
