//! [`MappedFile`]: a read-only memory map of a whole file, the one place this workspace maps
//! files (checkpoints and pre-quantized shard files). It does not parse anything.

use std::fmt;
use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A file mapped read-only into memory; dereferences to its bytes.
pub struct MappedFile {
    map: memmap2::Mmap,
    path: PathBuf,
}

impl MappedFile {
    /// Maps `path` read-only.
    ///
    /// The file must not be truncated or rewritten in place while mapped (shard files are written
    /// to a temporary name and renamed into place, which leaves existing maps intact).
    pub fn open(path: &Path) -> std::io::Result<MappedFile> {
        let file = File::open(path)?;
        // SAFETY: the map is read-only (a shared mapping, so it would see writes by others). The
        // workspace never modifies a file in place after writing it (new versions are renamed
        // over the old path), so the bytes behind the returned slice do not change while it is
        // alive; that a user truncates a checkpoint while it is being served is the contract
        // `open` documents above.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(MappedFile {
            map,
            path: path.to_path_buf(),
        })
    }

    /// Length of the file in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Deref for MappedFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map
    }
}

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedFile")
            .field("path", &self.path)
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_file_contents() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("moe-kernels-mmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("data.bin");
        std::fs::write(&path, b"hello, map")?;
        let map = MappedFile::open(&path)?;
        assert_eq!(&map[..], b"hello, map");
        assert_eq!(map.len(), 10);
        std::fs::write(dir.join("empty.bin"), b"")?;
        let empty = MappedFile::open(&dir.join("empty.bin"))?;
        assert!(empty.is_empty());
        assert!(MappedFile::open(&dir.join("missing.bin")).is_err());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
