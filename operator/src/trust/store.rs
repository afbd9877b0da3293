//! The local metadata directory: `<role>.json` exactly as the server sent it, written
//! atomically (temporary file, then rename) so a crash never leaves half a file.

use std::path::{Path, PathBuf};

use super::TrustError;

#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, TrustError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| store_err(&dir, e))?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, role: &str) -> PathBuf {
        self.dir.join(format!("{}.json", encode_role(role)))
    }

    pub fn load(&self, role: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(role)).ok()
    }

    pub fn save(&self, role: &str, bytes: &[u8]) -> Result<(), TrustError> {
        let path = self.path(role);
        // Private scratch space lives in a subfolder: the directory holds only metadata.
        let tmp_dir = self.dir.join(".tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(|e| store_err(&tmp_dir, e))?;
        let tmp = tmp_dir.join(format!("{}.json.part", encode_role(role)));
        std::fs::write(&tmp, bytes).map_err(|e| store_err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| store_err(&path, e))
    }

    pub fn remove(&self, role: &str) {
        let _ = std::fs::remove_file(self.path(role));
    }
}

/// Role names may contain `/` and other characters unsafe in file names; encode like
/// python-tuf (`urllib.parse.quote(name, '')`).
pub fn encode_role(role: &str) -> String {
    let mut out = String::with_capacity(role.len());
    for b in role.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn store_err(path: &Path, e: std::io::Error) -> TrustError {
    TrustError::Store { path: path.display().to_string(), reason: e.to_string() }
}
