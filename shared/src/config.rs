//! Configuration from the environment, the way Lambda (and SAM) pass it.

use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// A variable that must be set and non-empty.
pub fn required(name: &'static str) -> Result<String, ConfigError> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => Err(ConfigError::Missing(name)),
    }
}

/// A variable parsed as `T`, or `default` when unset or empty.
pub fn parsed<T: FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value.parse().map_err(|e: T::Err| ConfigError::Invalid {
            name,
            value,
            reason: e.to_string(),
        }),
        _ => Ok(default),
    }
}

/// A duration given in milliseconds.
pub fn millis(name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    parsed(name, default.as_millis() as u64).map(Duration::from_millis)
}

/// `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>` variables that are set but empty.
///
/// The SDK takes an empty one for an endpoint and panics on the first request ("URL was
/// unset"). `sam local` passes an empty string for a variable the template sets with
/// `!If [..., !Ref AWS::NoValue]`, which it cannot resolve, so an empty one must mean unset.
pub fn empty_endpoint_urls(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<std::ffi::OsString> {
    vars.into_iter()
        .filter(|(name, value)| {
            value.is_empty()
                && name.to_str().is_some_and(|name| {
                    name == "AWS_ENDPOINT_URL" || name.starts_with("AWS_ENDPOINT_URL_")
                })
        })
        .map(|(name, _)| name)
        .collect()
}

/// Runs a binary's async `main` on a multi-threaded Tokio runtime, after unsetting the
/// [`empty_endpoint_urls`], which must happen before any other thread exists.
pub fn run_main<F: std::future::Future>(main: F) -> F::Output {
    for name in empty_endpoint_urls(std::env::vars_os()) {
        // SAFETY: called first thing in `main`, before the runtime below starts its threads,
        // so nothing else reads or writes the environment meanwhile.
        unsafe { std::env::remove_var(name) };
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime")
        .block_on(main)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_empty_endpoint_url_variables_count_as_unset() {
        let vars = [
            ("AWS_ENDPOINT_URL", ""),
            ("AWS_ENDPOINT_URL_SQS", ""),
            ("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:4566"),
            ("AWS_REGION", ""),
            ("AWS_ENDPOINT_URLS", "x"),
        ]
        .map(|(n, v)| (n.into(), v.into()));
        assert_eq!(
            empty_endpoint_urls(vars),
            ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS"].map(std::ffi::OsString::from)
        );
    }
}
