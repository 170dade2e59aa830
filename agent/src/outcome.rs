//! The one map from what became of a request to an HTTP status (the API) and a process exit
//! code (the CLI), so that `POST /v1/faults`, `faultline fault inject` in-process and
//! `faultline fault inject` through an agent answer the same failure the same way.
//!
//! Exit codes are part of the contract with users' scripts: 0 success, 1 a runtime failure,
//! 2 a configuration or usage error, 3 refused (a guard, or a target another drill holds),
//! or, for `faultline status`, no agent running.

use faultline_chaos::FaultError;
use http::StatusCode;

/// Exit code for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a configuration or usage error.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code when a guard refused the request, or another drill holds a target.
pub const EXIT_REFUSED: u8 = 3;
/// Exit code of `faultline status` when no agent answers on the state directory's socket.
pub const EXIT_NO_AGENT: u8 = 3;

/// What went wrong, in the terms both the API and the CLI answer in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A guard refused it (protected target, over a limit) or a fault could not be planned
    /// for a drill: 422, exit 3.
    Refused,
    /// Someone else holds the target (another drill, a lock): 409, exit 3.
    Busy,
    /// The request was fine but the system's state did not let it take hold (the fault was
    /// not in effect after apply and was reverted): 409, exit 1.
    Conflict,
    /// The request is malformed or names something impossible: 400, exit 1.
    BadRequest,
    /// No such fault or drill: 404, exit 1.
    NotFound,
    /// The agent is stopping: 503, exit 1.
    Unavailable,
    /// Anything else: 500, exit 1.
    Failed,
}

impl Outcome {
    /// The outcome of a failed fault operation.
    pub fn of_fault_error(e: &FaultError) -> Self {
        match e {
            e if e.guard().is_some() => Outcome::Refused,
            FaultError::NotInEffect { .. } => Outcome::Conflict,
            FaultError::UnknownId(_) => Outcome::NotFound,
            _ => Outcome::BadRequest,
        }
    }

    /// The outcome of a failed revert: an unknown fault, or a revert that did not complete.
    pub fn of_revert_error(e: &FaultError) -> Self {
        match e {
            FaultError::UnknownId(_) => Outcome::NotFound,
            _ => Outcome::Failed,
        }
    }

    /// The outcome an API answer's status stands for (the CLI talking to an agent).
    pub fn of_status(status: u16) -> Self {
        match status {
            422 => Outcome::Refused,
            409 => Outcome::Conflict,
            400 => Outcome::BadRequest,
            404 => Outcome::NotFound,
            503 => Outcome::Unavailable,
            _ => Outcome::Failed,
        }
    }

    /// The HTTP status the API answers with.
    pub fn status(self) -> StatusCode {
        match self {
            Outcome::Refused => StatusCode::UNPROCESSABLE_ENTITY,
            Outcome::Busy | Outcome::Conflict => StatusCode::CONFLICT,
            Outcome::BadRequest => StatusCode::BAD_REQUEST,
            Outcome::NotFound => StatusCode::NOT_FOUND,
            Outcome::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Outcome::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The exit code the CLI ends with.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Refused | Outcome::Busy => EXIT_REFUSED,
            _ => EXIT_FAILURE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_422_and_exit_3_both_ways() {
        let s = Outcome::Refused.status().as_u16();
        assert_eq!(s, 422);
        assert_eq!(Outcome::of_status(s).exit_code(), EXIT_REFUSED);
        assert_eq!(Outcome::Busy.exit_code(), EXIT_REFUSED);
        for o in [
            Outcome::Conflict,
            Outcome::BadRequest,
            Outcome::NotFound,
            Outcome::Unavailable,
            Outcome::Failed,
        ] {
            assert_eq!(o.exit_code(), EXIT_FAILURE, "{o:?}");
        }
    }

    #[test]
    fn fault_errors_map_as_the_api_documents() {
        let unknown = FaultError::UnknownId("x".into());
        assert_eq!(
            Outcome::of_fault_error(&unknown).status(),
            StatusCode::NOT_FOUND
        );
    }
}
