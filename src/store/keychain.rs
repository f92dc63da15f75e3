//! The OS keychain backend (keyring-core + the per-OS store) and the translation of its errors.

use std::collections::HashMap;
use std::sync::Arc;

use keyring_core::{CredentialStore, Entry, Error as KError};

use super::{SecretBackend, Slot, StoreError, StoreKind};
use crate::secret::Secret;

/// The keychain service name of every item csp-onboard writes.
pub const SERVICE: &str = "csp-onboard";

/// The keychain user/account of a profile's slot: `<profile>` or `<profile>#pending`.
/// (`#` is not allowed in profile names, so no profile's current item can collide with another's
/// pending one.)
pub fn keychain_account(profile: &str, slot: Slot) -> String {
    match slot {
        Slot::Current => profile.to_string(),
        Slot::Pending => format!("{profile}#pending"),
    }
}

// Each OS constructs only its own variant.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    SecretService,
    MacKeychain,
    WindowsCredentials,
    /// A store handed in by the caller (the mock in tests).
    Injected,
}

/// Secrets in the OS keychain through keyring-core. Entries are built in our own store handle
/// (`Entry::new_in_store`), never through a process-global default, so nothing can silently end
/// up in another store.
pub struct KeychainBackend {
    store: Arc<CredentialStore>,
    platform: Platform,
}

impl std::fmt::Debug for KeychainBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeychainBackend")
            .field("platform", &self.platform)
            .field("vendor", &self.store.vendor())
            .finish()
    }
}

impl KeychainBackend {
    /// Use a given keyring-core store (tests: `keyring_core::mock::Store::new()?`).
    pub fn with_store(store: Arc<CredentialStore>) -> Self {
        KeychainBackend {
            store,
            platform: Platform::Injected,
        }
    }

    /// The keyring-core store underneath.
    pub fn store(&self) -> &Arc<CredentialStore> {
        &self.store
    }

    /// Connect to this OS's keychain and probe that it can be written now (blocking).
    pub fn open_platform() -> Result<Self, StoreError> {
        let (store, platform) = platform_store()?;
        let backend = KeychainBackend { store, platform };
        backend.probe()?;
        Ok(backend)
    }

    fn probe(&self) -> Result<(), StoreError> {
        #[cfg(target_os = "linux")]
        if self.platform == Platform::SecretService {
            return linux::probe_default_collection();
        }
        // Elsewhere a lookup of an item that does not exist exercises the same path as a real
        // read (and the unlock prompt, if any) without leaving anything behind.
        let entry = self.entry("csp-onboard-probe", Slot::Pending)?;
        match entry.get_password() {
            Ok(_) | Err(KError::NoEntry) => Ok(()),
            Err(e) => Err(map_keyring_error(e, "csp-onboard-probe")),
        }
    }

    fn label(profile: &str, slot: Slot) -> String {
        match slot {
            Slot::Current => format!("csp-onboard client secret ({profile})"),
            Slot::Pending => format!("csp-onboard pending client secret ({profile})"),
        }
    }

    fn entry(&self, profile: &str, slot: Slot) -> Result<Entry, StoreError> {
        let account = keychain_account(profile, slot);
        let built = if self.platform == Platform::SecretService {
            // The label is what Seahorse shows; the store applies it when it creates the item.
            let label = Self::label(profile, slot);
            let mods = HashMap::from([("label", label.as_str())]);
            Entry::new_in_store_with_modifiers(&self.store, SERVICE, &account, &mods)
        } else {
            Entry::new_in_store(&self.store, SERVICE, &account)
        };
        built.map_err(|e| map_keyring_error(e, &account))
    }
}

#[cfg(target_os = "linux")]
fn platform_store() -> Result<(Arc<CredentialStore>, Platform), StoreError> {
    let store: Arc<CredentialStore> = zbus_secret_service_keyring_store::Store::new()
        .map_err(|e| map_keyring_error(e, "(connect)"))?;
    Ok((store, Platform::SecretService))
}

#[cfg(target_os = "macos")]
fn platform_store() -> Result<(Arc<CredentialStore>, Platform), StoreError> {
    let store: Arc<CredentialStore> = apple_native_keyring_store::keychain::Store::new()
        .map_err(|e| map_keyring_error(e, "(connect)"))?;
    Ok((store, Platform::MacKeychain))
}

#[cfg(target_os = "windows")]
fn platform_store() -> Result<(Arc<CredentialStore>, Platform), StoreError> {
    let store: Arc<CredentialStore> = windows_native_keyring_store::Store::new()
        .map_err(|e| map_keyring_error(e, "(connect)"))?;
    Ok((store, Platform::WindowsCredentials))
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
fn platform_store() -> Result<(Arc<CredentialStore>, Platform), StoreError> {
    Err(StoreError::Unsupported(
        "no OS keychain support is built for this platform".into(),
    ))
}

impl SecretBackend for KeychainBackend {
    fn kind(&self) -> StoreKind {
        StoreKind::Keychain
    }

    fn get(&self, profile: &str, slot: Slot) -> Result<Option<Secret>, StoreError> {
        let entry = self.entry(profile, slot)?;
        match entry.get_password() {
            Ok(s) => Ok(Some(Secret::new(s))),
            Err(KError::NoEntry) => Ok(None),
            Err(e) => Err(map_keyring_error(e, &keychain_account(profile, slot))),
        }
    }

    fn set(&self, profile: &str, slot: Slot, secret: &Secret) -> Result<(), StoreError> {
        // Secret Service: an existing item gets its secret replaced in one call (SetSecret), a new
        // one is created with replace=true; either way there is never a moment with no item.
        let entry = self.entry(profile, slot)?;
        entry
            .set_password(secret.expose())
            .map_err(|e| map_keyring_error(e, &keychain_account(profile, slot)))
    }

    fn delete(&self, profile: &str, slot: Slot) -> Result<bool, StoreError> {
        let entry = self.entry(profile, slot)?;
        match entry.delete_credential() {
            Ok(()) => Ok(true),
            Err(KError::NoEntry) => Ok(false),
            Err(e) => Err(map_keyring_error(e, &keychain_account(profile, slot))),
        }
    }

    fn describe(&self, profile: &str) -> String {
        match self.platform {
            Platform::SecretService => {
                format!("Secret Service (service {SERVICE}, username {profile})")
            }
            Platform::MacKeychain => {
                format!("macOS login keychain (service {SERVICE}, account {profile})")
            }
            Platform::WindowsCredentials => {
                format!("Windows Credential Manager (target {profile}.{SERVICE})")
            }
            Platform::Injected => {
                format!(
                    "{} (service {SERVICE}, user {profile})",
                    self.store.vendor()
                )
            }
        }
    }
}

/// Translate a keyring-core error into a [`StoreError`] that says why and what to do.
/// Never formats the variants that carry secret bytes (`BadEncoding`, `BadDataFormat`).
pub(crate) fn map_keyring_error(e: KError, account: &str) -> StoreError {
    match e {
        KError::NoStorageAccess(inner) => {
            #[cfg(target_os = "linux")]
            if let Some(ss) = inner.downcast_ref::<secret_service::Error>() {
                return linux::map_ss_error(ss);
            }
            StoreError::Locked(inner.to_string())
        }
        KError::PlatformFailure(inner) => {
            #[cfg(target_os = "linux")]
            if let Some(ss) = inner.downcast_ref::<secret_service::Error>() {
                return linux::map_ss_error(ss);
            }
            StoreError::Other(inner.to_string())
        }
        KError::NoEntry => StoreError::Other(format!("no keychain item for {SERVICE}/{account}")),
        KError::BadEncoding(_) => StoreError::Other(format!(
            "the keychain item {SERVICE}/{account} does not hold text; delete it and store the secret again"
        )),
        KError::BadDataFormat(_, _) => StoreError::Other(format!(
            "the keychain item {SERVICE}/{account} is malformed; delete it and store the secret again"
        )),
        KError::BadStoreFormat(why) => {
            StoreError::Other(format!("the keychain is malformed: {why}"))
        }
        KError::TooLong(what, limit) => StoreError::Unsupported(format!(
            "{what} is longer than the keychain's limit of {limit}"
        )),
        KError::Invalid(what, why) => StoreError::Other(format!("invalid {what}: {why}")),
        KError::Ambiguous(items) => StoreError::Other(format!(
            "{} keychain items match service {SERVICE} and user {account}; delete the extra ones \
             (Linux: `secret-tool clear service {SERVICE} username '{account}'` removes all) and store the secret again",
            items.len()
        )),
        KError::NoDefaultStore => StoreError::Other("no keychain store is configured".into()),
        KError::NotSupportedByStore(why) => StoreError::Unsupported(why),
        other => StoreError::Other(other.to_string()),
    }
}

#[cfg(target_os = "linux")]
mod linux {
    //! Secret Service specifics: the up-front probe and the mapping of its error causes.

    use secret_service::{EncryptionType, Error as SsError, blocking::SecretService};

    use super::StoreError;

    const SERVICE_UNKNOWN: &str = "org.freedesktop.DBus.Error.ServiceUnknown";

    /// Is there a default (login) collection, and is it unlocked (or can it be, via the desktop's
    /// prompt)? A search for a missing item would succeed even on a locked or missing collection,
    /// so ask the collection itself.
    pub(super) fn probe_default_collection() -> Result<(), StoreError> {
        // Plain: the probe moves no secret, so skip the key exchange.
        let ss = SecretService::connect(EncryptionType::Plain).map_err(|e| map_ss_error(&e))?;
        let collection = ss.get_default_collection().map_err(|e| map_ss_error(&e))?;
        if collection.is_locked().map_err(|e| map_ss_error(&e))? {
            // On a desktop this shows the unlock dialog; headless it fails at once with `Prompt`.
            collection.unlock().map_err(|e| map_ss_error(&e))?;
        }
        Ok(())
    }

    pub(super) fn map_ss_error(e: &SsError) -> StoreError {
        let reason = e.to_string();
        match e {
            SsError::Unavailable => StoreError::NoSessionBus(reason),
            SsError::Locked | SsError::Prompt | SsError::PromptDisconnected => {
                StoreError::Locked(reason)
            }
            SsError::NoResult => StoreError::NoCollection(reason),
            SsError::Zbus(z) => match z {
                zbus::Error::Connection(..)
                | zbus::Error::InputOutput(_)
                | zbus::Error::Address(_)
                | zbus::Error::Handshake(_) => StoreError::NoSessionBus(reason),
                zbus::Error::MethodError(name, _, _) if name.as_str() == SERVICE_UNKNOWN => {
                    StoreError::NoProvider(reason)
                }
                zbus::Error::FDO(f) if matches!(**f, zbus::fdo::Error::ServiceUnknown(_)) => {
                    StoreError::NoProvider(reason)
                }
                _ => StoreError::Other(reason),
            },
            SsError::ZbusFdo(zbus::fdo::Error::ServiceUnknown(_)) => StoreError::NoProvider(reason),
            _ => StoreError::Other(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyring_core::mock;

    /// An error to inject and the check its translation must pass.
    type Case = (KError, fn(&StoreError) -> bool);

    fn mock_backend() -> KeychainBackend {
        let store: Arc<CredentialStore> = mock::Store::new().unwrap();
        KeychainBackend::with_store(store)
    }

    /// Make the next operation on `account` fail with `err`.
    fn inject(b: &KeychainBackend, account: &str, err: KError) {
        let entry = Entry::new_in_store(b.store(), SERVICE, account).unwrap();
        entry
            .as_any()
            .downcast_ref::<mock::Cred>()
            .unwrap()
            .set_error(err);
    }

    #[test]
    fn round_trip_slots_replace_delete() {
        let b = mock_backend();
        assert_eq!(b.get("p", Slot::Current).unwrap(), None);
        b.set("p", Slot::Current, &Secret::new("one")).unwrap();
        b.set("p", Slot::Pending, &Secret::new("two")).unwrap();
        b.set("p", Slot::Current, &Secret::new("three")).unwrap();
        assert_eq!(
            b.get("p", Slot::Current).unwrap().unwrap().expose(),
            "three"
        );
        assert_eq!(b.get("p", Slot::Pending).unwrap().unwrap().expose(), "two");
        // Stored under the documented service/account names.
        let pending = Entry::new_in_store(b.store(), SERVICE, "p#pending").unwrap();
        assert_eq!(pending.get_password().unwrap(), "two");
        assert!(b.delete("p", Slot::Pending).unwrap());
        assert!(!b.delete("p", Slot::Pending).unwrap());
        assert_eq!(
            b.get("p", Slot::Current).unwrap().unwrap().expose(),
            "three"
        );
        assert!(b.describe("p").contains("service csp-onboard, user p"));
        assert_eq!(b.kind(), StoreKind::Keychain);
    }

    #[test]
    fn injected_errors_map_to_store_errors_with_exit_6() {
        let b = mock_backend();
        let io = |m: &str| -> Box<dyn std::error::Error + Send + Sync> {
            Box::new(std::io::Error::other(m.to_string()))
        };
        let cases: Vec<Case> = vec![
            (KError::NoStorageAccess(io("locked")), |e| {
                matches!(e, StoreError::Locked(_))
            }),
            (KError::PlatformFailure(io("boom")), |e| {
                matches!(e, StoreError::Other(_))
            }),
            (
                KError::TooLong("password".into(), 2560),
                |e| matches!(e, StoreError::Unsupported(m) if m.contains("2560")),
            ),
            (KError::NotSupportedByStore("nope".into()), |e| {
                matches!(e, StoreError::Unsupported(_))
            }),
            (KError::Invalid("user".into(), "bad".into()), |e| {
                matches!(e, StoreError::Other(_))
            }),
            (
                KError::Ambiguous(vec![]),
                |e| matches!(e, StoreError::Other(m) if m.contains("secret-tool clear service csp-onboard username 'p'")),
            ),
            (KError::BadStoreFormat("x".into()), |e| {
                matches!(e, StoreError::Other(_))
            }),
            (KError::NoDefaultStore, |e| {
                matches!(e, StoreError::Other(_))
            }),
        ];
        for (err, check) in cases {
            let shown = format!("{err:?}");
            inject(&b, "p", err);
            let got = b.get("p", Slot::Current).unwrap_err();
            assert!(check(&got), "{shown} -> {got:?}");
            assert_eq!(got.to_user_error().exit, crate::exit::Exit::Keychain);
        }
        // The error was one-shot: the store works again afterwards.
        b.set("p", Slot::Current, &Secret::new("ok")).unwrap();
        inject(&b, "p", KError::NoStorageAccess(io("locked")));
        assert!(matches!(
            b.set("p", Slot::Current, &Secret::new("x")),
            Err(StoreError::Locked(_))
        ));
        inject(&b, "p", KError::NoStorageAccess(io("locked")));
        assert!(matches!(
            b.delete("p", Slot::Current),
            Err(StoreError::Locked(_))
        ));
        assert_eq!(b.get("p", Slot::Current).unwrap().unwrap().expose(), "ok");
    }

    #[test]
    fn errors_carrying_secret_bytes_never_show_them() {
        let b = mock_backend();
        inject(&b, "p", KError::BadEncoding(b"TOPSECRET\xff".to_vec()));
        let e = b.get("p", Slot::Current).unwrap_err();
        let shown = format!("{e} {e:?} {}", e.to_user_error().message);
        assert!(
            !shown.contains("TOPSECRET") && !shown.contains("84, 79, 80"),
            "{shown}"
        );
        inject(
            &b,
            "p",
            KError::BadDataFormat(b"TOPSECRET".to_vec(), Box::new(std::io::Error::other("x"))),
        );
        let e = b.get("p", Slot::Current).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(
            !shown.contains("TOPSECRET") && !shown.contains("84, 79, 80"),
            "{shown}"
        );
    }

    #[test]
    fn debug_of_a_backend_holding_a_secret_is_redacted() {
        let b = mock_backend();
        b.set("p", Slot::Current, &Secret::new("TOPSECRET"))
            .unwrap();
        let shown = format!(
            "{b:?} {:?}",
            super::super::Secrets::new(Arc::new(mock_backend()))
        );
        assert!(
            !shown.contains("TOPSECRET") && !shown.contains("84, 79, 80"),
            "{shown}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn secret_service_causes_map_to_the_right_reason() {
        use secret_service::Error as Ss;
        let b = mock_backend();
        let cases: Vec<Case> = vec![
            (KError::PlatformFailure(Box::new(Ss::Unavailable)), |e| {
                matches!(e, StoreError::NoSessionBus(_))
            }),
            (
                KError::PlatformFailure(Box::new(Ss::Zbus(zbus::Error::Address("none".into())))),
                |e| matches!(e, StoreError::NoSessionBus(_)),
            ),
            (
                KError::PlatformFailure(Box::new(Ss::Zbus(zbus::Error::InputOutput(Arc::new(
                    std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                ))))),
                |e| matches!(e, StoreError::NoSessionBus(_)),
            ),
            (
                KError::PlatformFailure(Box::new(Ss::ZbusFdo(zbus::fdo::Error::ServiceUnknown(
                    "org.freedesktop.secrets".into(),
                )))),
                |e| matches!(e, StoreError::NoProvider(_)),
            ),
            (KError::NoStorageAccess(Box::new(Ss::NoResult)), |e| {
                matches!(e, StoreError::NoCollection(_))
            }),
            (
                KError::NoStorageAccess(Box::new(Ss::Prompt)),
                |e| matches!(e, StoreError::Locked(m) if m.contains("prompt dismissed")),
            ),
            (KError::NoStorageAccess(Box::new(Ss::Locked)), |e| {
                matches!(e, StoreError::Locked(_))
            }),
            (KError::PlatformFailure(Box::new(Ss::Crypto("bad"))), |e| {
                matches!(e, StoreError::Other(_))
            }),
        ];
        for (err, check) in cases {
            let shown = format!("{err:?}");
            inject(&b, "p", err);
            let got = b.get("p", Slot::Current).unwrap_err();
            assert!(check(&got), "{shown} -> {got:?}");
        }
    }
}
