//! Secrets that travel from the config to a client and must never be printed.

/// An Event Hubs connection string. `Debug` never prints it (it holds the key).
#[derive(Clone)]
pub struct ConnectionString(String);

impl ConnectionString {
    pub fn new(s: impl Into<String>) -> Self {
        ConnectionString(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The connection string held by environment variable `var` (read through `env`) and
    /// the optional custom endpoint, checked; what is wrong goes to `problems`, never the
    /// key. An empty string stands in when the variable is unset (then `problems` says so).
    pub fn from_env(
        var: &str,
        endpoint: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
        problems: &mut Vec<String>,
    ) -> ConnectionString {
        let conn = match env(var) {
            Some(c) => {
                if let Err(e) = ConnectionString::check(&c) {
                    problems.push(format!("connection_string_env: variable {var}: {e}"));
                }
                c
            }
            None => {
                problems.push(format!(
                    "connection_string_env: environment variable {var} is not set"
                ));
                String::new()
            }
        };
        if let Some(e) = endpoint
            && !(e.starts_with("amqp://") || e.starts_with("amqps://"))
        {
            problems.push(format!(
                "endpoint {e:?}: must be amqp://HOST:PORT or amqps://HOST:PORT"
            ));
        }
        ConnectionString(conn)
    }

    /// Checks the parts the clients need, without printing the key.
    pub fn check(s: &str) -> Result<(), String> {
        let has = |k: &str| {
            s.split(';').any(|p| {
                p.trim()
                    .to_ascii_lowercase()
                    .starts_with(&k.to_ascii_lowercase())
            })
        };
        if !has("Endpoint=") {
            return Err("the connection string has no Endpoint=".to_owned());
        }
        if !has("SharedAccessKeyName=") && !has("SharedAccessSignature=") {
            return Err(
                "the connection string has neither SharedAccessKeyName= nor SharedAccessSignature="
                    .to_owned(),
            );
        }
        Ok(())
    }
}

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionString(<redacted>)")
    }
}
