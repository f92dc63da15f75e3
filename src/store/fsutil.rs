//! Private directories and atomic private files: the filesystem rules shared by metadata and the file store.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Create `dir` (and missing parents) with mode 0700. Existing directories keep their mode.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Create `dir` if needed and make sure only the owner can enter it (0700), even if it already
/// existed with a wider mode: used for directories this program owns outright.
pub(crate) fn ensure_owner_only_dir(dir: &Path) -> io::Result<()> {
    create_private_dir(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(dir)?;
        if meta.permissions().mode() & 0o777 != 0o700 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// Refuse a data directory that belongs to another user or that others may write to: whoever can
/// write there can replace a profile (and so choose where its secret is sent) or plant files.
pub(crate) fn refuse_shared_dir(dir: &Path) -> Result<(), crate::exit::UserError> {
    #[cfg(unix)]
    {
        use crate::exit::{Exit, UserError};
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(dir).map_err(|e| {
            UserError::new(Exit::Failure, format!("cannot read {}: {e}", dir.display()))
        })?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(UserError::new(
                Exit::Failure,
                format!(
                    "the data directory {} belongs to another user (uid {}), not to you (uid {me})",
                    dir.display(),
                    meta.uid()
                ),
            )
            .hint("use a directory of your own: set CSP_ONBOARD_DATA_DIR, or fix its owner"));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(UserError::new(
                Exit::Failure,
                format!(
                    "the data directory {} is writable by other users (mode {mode:o})",
                    dir.display()
                ),
            )
            .hint(format!("run `chmod 700 {}`", dir.display())));
        }
    }
    Ok(())
}

/// Replace `path` with `bytes` so that a reader (or a crash) sees either the old or the new
/// content, never a torn file: write a 0600 temp file in the same directory, fsync it, rename it
/// over `path`, then fsync the directory so the rename itself survives a power cut.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_string_lossy();
    // Leading dot + ".tmp-" marks it as ours; listings skip dot files. pid + random part keep two
    // concurrent writers from sharing a temp file.
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir);
    Ok(())
}

#[cfg(unix)]
fn sync_dir(dir: &Path) {
    // Best effort: some filesystems refuse fsync on a directory; the data itself is already synced.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) {}

/// Unix permission bits of `path` (tests and the file store's "readable by others" check).
#[cfg(unix)]
pub(crate) fn mode_of(path: &Path) -> io::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(fs::metadata(path)?.permissions().mode() & 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["x.json".to_string()]);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_in_place_of_the_file_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"theirs").unwrap();
        let p = dir.path().join("x.json");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        write_atomic(&p, b"ours").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"theirs");
        assert!(!fs::symlink_metadata(&p).unwrap().is_symlink());
        assert_eq!(mode_of(&p).unwrap(), 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_private_dir(&sub).unwrap();
        assert_eq!(mode_of(&sub).unwrap(), 0o700);
        assert_eq!(mode_of(&dir.path().join("a")).unwrap(), 0o700);
        let p = sub.join("f");
        write_atomic(&p, b"x").unwrap();
        assert_eq!(mode_of(&p).unwrap(), 0o600);

        let loose = dir.path().join("loose");
        fs::create_dir(&loose).unwrap();
        fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        ensure_owner_only_dir(&loose).unwrap();
        assert_eq!(mode_of(&loose).unwrap(), 0o700);
    }
}
