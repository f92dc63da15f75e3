//! Profile metadata (never a secret): one JSON file per profile, readable without unlocking anything.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::StoreKind;
use super::fsutil;
use crate::cloud::Cloud;
use crate::exit::UserError;

/// What `show`/`list`/`check` need about a profile. Holds IDs, hint and dates only: the secret
/// itself is in the secret backend named by `store`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    pub profile: String,
    pub cloud: Cloud,
    pub tenant_id: String,
    #[serde(default)]
    pub commerce_id: Option<String>,
    pub app_id: String,
    #[serde(default)]
    pub app_object_id: Option<String>,
    #[serde(default)]
    pub app_display_name: Option<String>,
    #[serde(default)]
    pub key_id: Option<String>,
    /// The first three characters, as Graph shows them.
    #[serde(default)]
    pub secret_hint: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub secret_expires: Option<OffsetDateTime>,
    pub store: StoreKind,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub verified_at: Option<OffsetDateTime>,
    /// A rotation that added a key but has not finished switching to it.
    #[serde(default)]
    pub pending: Option<PendingRotation>,
    /// Old keys kept for a grace period (`rotate --overlap DAYS`), removed by the first
    /// signed-in run after their date.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring: Vec<RetiringKey>,
    /// Display names of keys an interrupted rotation may have left on the app but no read
    /// showed yet (Graph's replicas lag): the next rotation looks for them and removes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sweep_key_names: Vec<String>,
    /// For the `custom` cloud: the endpoints the profile was made with. Its secret is never
    /// sent anywhere else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<BoundEndpoints>,
}

/// The base URLs a `custom` profile belongs to.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BoundEndpoints {
    pub authority: String,
    pub graph: String,
    pub partner_center: String,
}

impl BoundEndpoints {
    pub fn of(ep: &crate::cloud::Endpoints) -> BoundEndpoints {
        BoundEndpoints {
            authority: ep.authority.to_string(),
            graph: ep.graph.to_string(),
            partner_center: ep.partner_center.to_string(),
        }
    }
}

impl Profile {
    /// A new profile for an app, with no key recorded yet.
    pub fn new(
        profile: &str,
        cloud: Cloud,
        tenant_id: &str,
        app_id: &str,
        store: StoreKind,
    ) -> Profile {
        let now = OffsetDateTime::now_utc();
        Profile {
            profile: profile.to_string(),
            cloud,
            tenant_id: tenant_id.to_string(),
            commerce_id: None,
            app_id: app_id.to_string(),
            app_object_id: None,
            app_display_name: None,
            key_id: None,
            secret_hint: None,
            secret_expires: None,
            store,
            created_at: now,
            updated_at: now,
            verified_at: None,
            pending: None,
            retiring: Vec::new(),
            sweep_key_names: Vec::new(),
            endpoints: None,
        }
    }

    /// A key (or, for a captured profile, a verified secret) is recorded: re-running init rotates.
    pub fn holds_key(&self) -> bool {
        self.key_id.is_some() || self.pending.is_some() || self.verified_at.is_some()
    }
}

/// An old key left on the app until `after`, so tools still holding it keep working meanwhile.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RetiringKey {
    pub key_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub after: OffsetDateTime,
}

/// A rotation in flight. Recorded before `addPassword`, so a re-run can find the key it created
/// (by its unique display name) even if the crash came before the key ID was known.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PendingRotation {
    /// Unique, e.g. `csp-onboard 2026-11-30T10:00:00Z 3f9a`.
    pub key_display_name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub secret_expires: Option<OffsetDateTime>,
    #[serde(default)]
    pub old_key_id: Option<String>,
    #[serde(default)]
    pub keep_old: bool,
    /// Keep the old key this many days instead of removing it at once.
    #[serde(default)]
    pub overlap_days: Option<u32>,
}

/// Profile names become file names and keychain account names: 1–64 of `[A-Za-z0-9._-]`,
/// starting with a letter or digit (so no `.`/`..`, no hidden files, nothing that looks like a
/// flag), and not a reserved Windows device name. Exit 2 otherwise.
pub fn validate_profile_name(name: &str) -> Result<(), UserError> {
    let hint = "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. contoso-prod)";
    let shown: String = name.chars().take(70).collect();
    let bad = |why: &str| {
        Err(UserError::usage(format!("invalid profile name {shown:?}: {why}")).hint(hint))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 64 {
        return bad("it is longer than 64 characters");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(&format!("{c:?} is not allowed"));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("it must start with a letter or digit");
    }
    let stem = name.split('.').next().unwrap_or(name).to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit());
    if reserved {
        return bad("it is a reserved device name on Windows");
    }
    Ok(())
}

/// The metadata directory: `<data_dir>/profiles/<profile>.json`.
#[derive(Debug, Clone)]
pub struct MetaStore {
    dir: PathBuf,
    /// The `custom` endpoints of this run, recorded in a custom profile on its first save.
    custom: Option<BoundEndpoints>,
}

impl MetaStore {
    /// Open (creating, 0700) `<data_dir>/profiles`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let dir = data_dir.join("profiles");
        fsutil::ensure_owner_only_dir(&dir)
            .with_context(|| format!("cannot create the profile directory {}", dir.display()))?;
        Ok(MetaStore { dir, custom: None })
    }

    /// The directory holding the profile files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of one profile (it may not exist).
    pub fn path(&self, profile: &str) -> PathBuf {
        self.dir.join(format!("{profile}.json"))
    }

    pub fn load(&self, profile: &str) -> anyhow::Result<Option<Profile>> {
        validate_profile_name(profile)?;
        let path = self.path(profile);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(parse(&path, profile, &bytes)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// This run's `custom` endpoints: a custom profile saved without endpoints records them,
    /// so it belongs to them from then on.
    pub fn bind_custom_endpoints(&mut self, ep: &crate::cloud::Endpoints) {
        self.custom = Some(BoundEndpoints::of(ep));
    }

    /// Write atomically (temp + fsync + rename), mode 0600.
    pub fn save(&self, p: &Profile) -> anyhow::Result<()> {
        validate_profile_name(&p.profile)?;
        let path = self.path(&p.profile);
        let bound;
        let p = if p.cloud == Cloud::Custom && p.endpoints.is_none() && self.custom.is_some() {
            bound = Profile {
                endpoints: self.custom.clone(),
                ..p.clone()
            };
            &bound
        } else {
            p
        };
        let mut json = serde_json::to_vec_pretty(p).context("cannot encode the profile")?;
        json.push(b'\n');
        fsutil::write_atomic(&path, &json)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// `Ok(false)` when the profile did not exist.
    pub fn delete(&self, profile: &str) -> anyhow::Result<bool> {
        validate_profile_name(profile)?;
        let path = self.path(profile);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("cannot delete {}", path.display())),
        }
    }

    /// Every profile, sorted by name. A file that does not parse is an error naming it (rather
    /// than a profile silently missing from the list).
    /// An exclusive lock on one profile for the life of the returned file: two runs that change
    /// the same profile at once (cron and an admin) would each add a key and orphan one.
    pub fn lock(&self, profile: &str) -> anyhow::Result<fs::File> {
        validate_profile_name(profile)?;
        let path = self.dir.join(format!("{profile}.lock"));
        let mut opts = fs::OpenOptions::new();
        opts.create(true).truncate(false).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // A lock file holds nothing, but a symlink in its place is not followed either.
            opts.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        let file = opts
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(fs::TryLockError::WouldBlock) => Err(UserError::new(
                crate::exit::Exit::Failure,
                format!("another csp-onboard run is changing profile '{profile}' right now"),
            )
            .hint("wait for it to finish, then run this again")
            .into()),
            Err(fs::TryLockError::Error(e)) => {
                Err(anyhow::Error::new(e).context(format!("cannot lock {}", path.display())))
            }
        }
    }

    pub fn list(&self) -> anyhow::Result<Vec<Profile>> {
        let entries = fs::read_dir(&self.dir)
            .with_context(|| format!("cannot read {}", self.dir.display()))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", self.dir.display()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // Temp files of an interrupted save start with '.'; anything else foreign is ignored.
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            if validate_profile_name(stem).is_err() {
                continue;
            }
            let path = entry.path();
            let bytes =
                fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            out.push(parse(&path, stem, &bytes)?);
        }
        out.sort_by(|a, b| a.profile.cmp(&b.profile));
        Ok(out)
    }
}

/// Read one profile file. Its name is the profile's identity (the lock and the secret go by it):
/// a file whose content names another profile, e.g. a copy, is refused rather than acted on.
fn parse(path: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<Profile> {
    let damaged = |why: String| {
        format!(
            "the profile file {} is damaged{why}; fix it or delete it and run `csp-onboard init` again",
            path.display()
        )
    };
    let p: Profile = serde_json::from_slice(bytes).with_context(|| damaged(String::new()))?;
    if p.profile != name {
        return Err(UserError::new(
            crate::exit::Exit::Failure,
            format!(
                "the profile file {} says it is profile '{}', not '{name}'",
                path.display(),
                p.profile
            ),
        )
        .hint(format!(
            "a copied or renamed file? delete {}, or set its \"profile\" field to \"{name}\"",
            path.display()
        ))
        .into());
    }
    // A value no run could have written (an older version did not bound it) would fail later,
    // in the middle of a rotation: refuse it here, where the file can be named.
    if let Some(days) = p.pending.as_ref().and_then(|r| r.overlap_days)
        && days > crate::input::MAX_OVERLAP_DAYS
    {
        anyhow::bail!(damaged(format!(
            ": pending.overlap_days is {days}, more than {}",
            crate::input::MAX_OVERLAP_DAYS
        )));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Exit;
    use time::macros::datetime;

    fn sample(name: &str) -> Profile {
        Profile {
            profile: name.to_string(),
            cloud: Cloud::Emulator,
            tenant_id: "11111111-2222-3333-4444-555555555555".into(),
            commerce_id: None,
            app_id: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into(),
            app_object_id: Some("obj".into()),
            app_display_name: Some("Partner Center API".into()),
            key_id: Some("key-1".into()),
            secret_hint: Some("abc".into()),
            secret_expires: Some(datetime!(2028-11-30 10:00:00 UTC)),
            store: StoreKind::Keychain,
            created_at: datetime!(2026-11-30 10:00:00 UTC),
            updated_at: datetime!(2026-11-30 10:05:00 UTC),
            verified_at: None,
            pending: Some(PendingRotation {
                key_display_name: "csp-onboard 2026-12-01T10:00:00Z 77aa".into(),
                started_at: datetime!(2026-12-01 10:00:00 UTC),
                key_id: None,
                secret_expires: None,
                old_key_id: Some("key-1".into()),
                keep_old: false,
                overlap_days: None,
            }),
            retiring: Vec::new(),
            sweep_key_names: Vec::new(),
            endpoints: None,
        }
    }

    #[test]
    fn a_locked_profile_cannot_be_locked_twice_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        let held = m.lock("prod").unwrap();
        let e = m.lock("prod").unwrap_err();
        assert!(e.to_string().contains("another csp-onboard run"), "{e}");
        assert!(m.lock("other").is_ok(), "profiles lock independently");
        drop(held);
        assert!(m.lock("prod").is_ok());
        assert!(m.list().unwrap().is_empty(), "lock files are not profiles");
    }

    #[test]
    fn round_trip_list_sorted_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        assert_eq!(m.load("zeta").unwrap(), None);
        m.save(&sample("zeta")).unwrap();
        m.save(&sample("alpha")).unwrap();
        assert_eq!(m.load("zeta").unwrap(), Some(sample("zeta")));
        let names: Vec<_> = m.list().unwrap().into_iter().map(|p| p.profile).collect();
        assert_eq!(names, ["alpha", "zeta"]);
        assert!(m.delete("zeta").unwrap());
        assert!(!m.delete("zeta").unwrap());
        assert_eq!(m.load("zeta").unwrap(), None);
    }

    #[test]
    fn json_uses_rfc3339_and_contains_no_secret_field() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        m.save(&sample("p")).unwrap();
        let text = fs::read_to_string(m.path("p")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["secret_expires"], "2028-11-30T10:00:00Z");
        assert_eq!(v["cloud"], "emulator");
        assert_eq!(v["store"], "keychain");
        assert_eq!(v["verified_at"], serde_json::Value::Null);
        assert!(v.get("secret").is_none());
    }

    #[test]
    fn older_files_without_optional_fields_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        fs::write(
            m.path("min"),
            r#"{"profile":"min","cloud":"global","tenant_id":"t","app_id":"a","store":"file",
               "created_at":"2026-11-30T10:00:00Z","updated_at":"2026-11-30T10:00:00Z"}"#,
        )
        .unwrap();
        let p = m.load("min").unwrap().unwrap();
        assert_eq!(p.store, StoreKind::File);
        assert_eq!(p.secret_expires, None);
        assert_eq!(p.pending, None);
    }

    #[test]
    fn save_leaves_no_temp_file_and_list_skips_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        m.save(&sample("p")).unwrap();
        m.save(&sample("p")).unwrap();
        let names: Vec<_> = fs::read_dir(m.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["p.json"]);
        // A temp file left by a save killed mid-way is not a profile.
        fs::write(m.dir().join(".p.json.tmp-1-0000"), b"{").unwrap();
        assert_eq!(m.list().unwrap().len(), 1);
    }

    #[test]
    fn a_damaged_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        fs::write(m.path("broken"), b"{not json").unwrap();
        let err = format!("{:#}", m.list().unwrap_err());
        assert!(
            err.contains("broken.json") && err.contains("damaged"),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn modes_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        m.save(&sample("p")).unwrap();
        assert_eq!(fsutil::mode_of(m.dir()).unwrap(), 0o700);
        assert_eq!(fsutil::mode_of(&m.path("p")).unwrap(), 0o600);
    }

    #[test]
    fn profile_names() {
        for ok in ["default", "contoso-prod", "a", "A.b_c-9", &"x".repeat(64)] {
            assert!(validate_profile_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "a\\b",
            ".hidden",
            "-flag",
            "with space",
            "é",
            "a#pending",
            "con",
            "NUL.x",
            "com1",
            &"x".repeat(65),
        ] {
            let e = validate_profile_name(bad).unwrap_err();
            assert_eq!(e.exit, Exit::Usage, "{bad}");
            assert!(e.hint.is_some());
        }
        // "command" merely starts like COM; it is fine.
        assert!(validate_profile_name("command").is_ok());
    }

    #[test]
    fn load_rejects_path_tricks_before_touching_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        let err = m.load("../secrets/x").unwrap_err();
        let ue = err.downcast_ref::<UserError>().unwrap();
        assert_eq!(ue.exit, Exit::Usage);
    }
}
