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
