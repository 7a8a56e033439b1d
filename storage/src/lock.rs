//! One node per data directory: an exclusive `flock` on `DIR/LOCK`, held for
//! the node's life and released by the kernel when the process dies (even
//! by `kill -9`), so a crashed node never leaves a stale lock behind.

use std::os::fd::AsRawFd;
use std::path::Path;

use crate::StorageError;

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct DirectoryLock {
    _file: std::fs::File,
}

impl DirectoryLock {
    /// Create `directory` if needed and lock it, or say who holds it.
    pub fn acquire(directory: &Path) -> Result<Self, StorageError> {
        let fail = |message: String| StorageError::Directory {
            path: directory.display().to_string(),
            message,
        };
        if directory.exists() && !directory.is_dir() {
            return Err(fail(
                "is not a directory (storage.data_directory names a directory for the partitions)"
                    .into(),
            ));
        }
        std::fs::create_dir_all(directory)
            .map_err(|error| fail(format!("cannot create it: {error}")))?;
        let path = directory.join("LOCK");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|error| fail(format!("cannot open {}: {error}", path.display())))?;
        // SAFETY: flock on a descriptor this function owns.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !locked {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(fail(format!(
                "another node is using it{}; two nodes may not share a data directory",
                match holder.trim() {
                    "" => String::new(),
                    pid => format!(" (process {pid})"),
                }
            )));
        }
        // Who holds it, for the message above; best effort.
        let _ = file.set_len(0);
        let _ = std::io::Write::write_all(&mut &file, std::process::id().to_string().as_bytes());
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_directory_is_refused_until_the_first_goes() {
        let directory = tempfile::tempdir().expect("tempdir");
        let first = DirectoryLock::acquire(directory.path()).expect("first");
        let second = DirectoryLock::acquire(directory.path()).expect_err("second");
        assert!(
            second.to_string().contains("another node is using it"),
            "{second}"
        );
        drop(first);
        DirectoryLock::acquire(directory.path()).expect("free again");
    }

    #[test]
    fn a_file_where_the_directory_should_be_is_named_as_such() {
        let directory = tempfile::tempdir().expect("tempdir");
        let file = directory.path().join("data");
        std::fs::write(&file, b"").expect("written");
        let refused = DirectoryLock::acquire(&file).expect_err("a file");
        assert!(
            refused.to_string().contains("is not a directory"),
            "{refused}"
        );
    }
}
