//! The Lambda environment as every function reads it: whether this process runs under
//! the Lambda Runtime API, and the `errorType` vocabulary of failed invocations.

/// True under Lambda: the runtime API's address is set (and not empty).
pub fn running_in_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some_and(|v| !v.is_empty())
}

/// A failed invocation's `errorType`: `Retryable.<Kind>` or `NonRetryable.<Kind>`, so
/// whoever reads a dead-letter record or a log can tell whether invoking again can help.
pub fn error_type(retryable: bool, kind: &str) -> String {
    let class = if retryable { "Retryable" } else { "NonRetryable" };
    format!("{class}.{kind}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_say_whether_to_retry() {
        assert_eq!(error_type(true, "StoreFailure"), "Retryable.StoreFailure");
        assert_eq!(error_type(false, "BadPayload"), "NonRetryable.BadPayload");
    }
}
