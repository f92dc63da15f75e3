//! The explicit file store (`--store file`): one 0600 file per secret in a 0700 directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::fsutil;
use super::{SecretBackend, Slot, StoreError, StoreKind};
use crate::secret::Secret;

/// Secrets as plain files under `<data_dir>/secrets`: `<profile>.secret` (current) and
/// `<profile>#pending.secret` (pending). Protected only by file permissions, which is why it is
/// used only when asked for (or for the emulator's fake secrets).
#[derive(Debug, Clone)]
pub struct FileBackend {
    dir: PathBuf,
}

impl FileBackend {
    /// Open (creating, or tightening to 0700) `<data_dir>/secrets`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let dir = data_dir.join("secrets");
        fsutil::ensure_owner_only_dir(&dir).map_err(|e| io_err(&dir, "cannot create", e))?;
        Ok(FileBackend { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding one slot of one profile.
    pub fn path(&self, profile: &str, slot: Slot) -> PathBuf {
        match slot {
            Slot::Current => self.dir.join(format!("{profile}.secret")),
            Slot::Pending => self.dir.join(format!("{profile}#pending.secret")),
        }
    }
}

fn io_err(path: &Path, what: &str, e: io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

fn check_name(profile: &str) -> Result<(), StoreError> {
    // The name becomes a path: refuse anything the metadata layer would refuse.
    super::validate_profile_name(profile).map_err(|e| StoreError::Other(e.message))
}

impl SecretBackend for FileBackend {
    fn kind(&self) -> StoreKind {
        StoreKind::File
    }

    fn get(&self, profile: &str, slot: Slot) -> Result<Option<Secret>, StoreError> {
        check_name(profile)?;
        let path = self.path(profile, slot);
        #[cfg(unix)]
        match fsutil::mode_of(&path) {
            // Like ssh with a private key: a secret others can read is not trusted silently.
            Ok(mode) if mode & 0o077 != 0 => {
                return Err(StoreError::Io(format!(
                    "{} is readable by other users (mode {mode:o}); run `chmod 600 {}` and rotate the secret",
                    path.display(),
                    path.display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, "cannot read", e)),
        }
        match fs::read_to_string(&path) {
            // An editor may have added a final newline; a client secret never ends with one.
            Ok(s) => Ok(Some(Secret::new(s.trim_end_matches(['\n', '\r'])))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(StoreError::Io(format!(
                "{} is not valid UTF-8; delete it and run `csp-onboard rotate`",
                path.display()
            ))),
            Err(e) => Err(io_err(&path, "cannot read", e)),
        }
    }

    fn set(&self, profile: &str, slot: Slot, secret: &Secret) -> Result<(), StoreError> {
        check_name(profile)?;
        let path = self.path(profile, slot);
        fsutil::write_atomic(&path, secret.expose().as_bytes())
            .map_err(|e| io_err(&path, "cannot write", e))
    }

    fn delete(&self, profile: &str, slot: Slot) -> Result<bool, StoreError> {
        check_name(profile)?;
        let path = self.path(profile, slot);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path, "cannot delete", e)),
        }
    }

    fn describe(&self, profile: &str) -> String {
        format!("file {}", self.path(profile, Slot::Current).display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_independent_and_replace_works() {
        let dir = tempfile::tempdir().unwrap();
        let b = FileBackend::open(dir.path()).unwrap();
        assert_eq!(b.get("p", Slot::Current).unwrap(), None);
        b.set("p", Slot::Current, &Secret::new("old")).unwrap();
        b.set("p", Slot::Pending, &Secret::new("new")).unwrap();
        b.set("p", Slot::Current, &Secret::new("old2")).unwrap();
        assert_eq!(b.get("p", Slot::Current).unwrap().unwrap().expose(), "old2");
        assert_eq!(b.get("p", Slot::Pending).unwrap().unwrap().expose(), "new");
        assert!(b.delete("p", Slot::Pending).unwrap());
        assert_eq!(b.get("p", Slot::Pending).unwrap(), None);
        assert_eq!(b.get("p", Slot::Current).unwrap().unwrap().expose(), "old2");
        // A profile whose name looks like another's pending slot cannot exist.
        assert!(b.get("p#pending", Slot::Current).is_err());
        assert!(b.describe("p").ends_with("p.secret"));
    }

    #[test]
    fn a_trailing_newline_added_by_an_editor_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let b = FileBackend::open(dir.path()).unwrap();
        b.set("p", Slot::Current, &Secret::new("x")).unwrap();
        fs::write(b.path("p", Slot::Current), "abc~def\n").unwrap();
        #[cfg(unix)]
        fs::set_permissions(
            b.path("p", Slot::Current),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        assert_eq!(
            b.get("p", Slot::Current).unwrap().unwrap().expose(),
            "abc~def"
        );
    }

    #[cfg(unix)]
    #[test]
    fn modes_and_refusal_of_a_world_readable_secret() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // A pre-existing, too-open directory is tightened.
        fs::create_dir(dir.path().join("secrets")).unwrap();
        fs::set_permissions(
            dir.path().join("secrets"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let b = FileBackend::open(dir.path()).unwrap();
        assert_eq!(fsutil::mode_of(b.dir()).unwrap(), 0o700);
        b.set("p", Slot::Current, &Secret::new("UNIQUEVALUE42"))
            .unwrap();
        let f = b.path("p", Slot::Current);
        assert_eq!(fsutil::mode_of(&f).unwrap(), 0o600);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        let err = b.get("p", Slot::Current).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("readable by other users") && !msg.contains("UNIQUEVALUE42"),
            "{msg}"
        );
    }

    #[test]
    fn errors_never_contain_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let b = FileBackend::open(dir.path()).unwrap();
        // Make the target a directory so the rename fails.
        fs::create_dir(b.path("p", Slot::Current)).unwrap();
        let err = b
            .set("p", Slot::Current, &Secret::new("TOPSECRETVALUE"))
            .unwrap_err();
        let shown = format!("{err} {err:?} {}", err.to_user_error().message);
        assert!(!shown.contains("TOPSECRETVALUE"), "{shown}");
        assert!(shown.contains("cannot write"), "{shown}");
    }
}
