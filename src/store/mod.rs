//! Where onboarded profiles live: secrets in the OS keychain (or the explicit file store), metadata in JSON.
