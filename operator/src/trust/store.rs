//! The local metadata directory: `<role>.json` exactly as the server sent it, written
//! atomically (temporary file, then rename) so a crash never leaves half a file.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use super::TrustError;

/// Where a client keeps the metadata it trusts: a directory (the command line tools,
/// where it outlives the process) or memory (the operator, whose lasting state is in
/// the cluster: no temporary files, so many repositories cannot fill its `/tmp`).
#[derive(Clone, Debug)]
pub struct Store {
    place: Place,
}

#[derive(Clone, Debug)]
enum Place {
    Dir(PathBuf),
    Memory(Arc<Mutex<HashMap<String, Vec<u8>>>>),
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, TrustError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| store_err(&dir, e))?;
        Ok(Self { place: Place::Dir(dir) })
    }

    /// A store in memory; its size is bounded by the metadata size limits.
    pub fn memory() -> Self {
        Self { place: Place::Memory(Arc::default()) }
    }

    /// A copy that no longer shares its contents with this one (a memory store), so a
    /// session built on it cannot change what an earlier session reads. A directory is
    /// the same directory.
    pub fn detached(&self) -> Self {
        match &self.place {
            Place::Dir(_) => self.clone(),
            Place::Memory(m) => {
                let copy = m.lock().map(|m| m.clone()).unwrap_or_default();
                Self { place: Place::Memory(Arc::new(Mutex::new(copy))) }
            }
        }
    }

    /// Where the store lives, for messages.
    pub fn describe(&self) -> String {
        match &self.place {
            Place::Dir(d) => d.display().to_string(),
            Place::Memory(_) => "memory".into(),
        }
    }

    fn path(dir: &Path, role: &str) -> PathBuf {
        dir.join(format!("{}.json", encode_role(role)))
    }

    pub fn load(&self, role: &str) -> Option<Vec<u8>> {
        match &self.place {
            Place::Dir(dir) => std::fs::read(Self::path(dir, role)).ok(),
            Place::Memory(m) => m.lock().ok()?.get(role).cloned(),
        }
    }

    pub fn save(&self, role: &str, bytes: &[u8]) -> Result<(), TrustError> {
        let dir = match &self.place {
            Place::Dir(dir) => dir,
            Place::Memory(m) => {
                let mut m =
                    m.lock().map_err(|_| TrustError::Store { path: "memory".into(), reason: "poisoned".into() })?;
                m.insert(role.to_string(), bytes.to_vec());
                return Ok(());
            }
        };
        let path = Self::path(dir, role);
        // Private scratch space lives in a subfolder: the directory holds only metadata.
        let tmp_dir = dir.join(".tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(|e| store_err(&tmp_dir, e))?;
        let tmp = tmp_dir.join(format!("{}.json.part", encode_role(role)));
        std::fs::write(&tmp, bytes).map_err(|e| store_err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| store_err(&path, e))
    }

    pub fn remove(&self, role: &str) {
        match &self.place {
            Place::Dir(dir) => {
                let _ = std::fs::remove_file(Self::path(dir, role));
            }
            Place::Memory(m) => {
                if let Ok(mut m) = m.lock() {
                    m.remove(role);
                }
            }
        }
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

pub(super) fn store_err(path: &Path, e: std::io::Error) -> TrustError {
    TrustError::Store { path: path.display().to_string(), reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_become_single_safe_file_names() {
        assert_eq!(encode_role("targets"), "targets");
        assert_eq!(encode_role("fraud/team"), "fraud%2Fteam");
        assert_eq!(encode_role("../root"), "..%2Froot");
        assert_eq!(encode_role("a b"), "a%20b");
    }

    #[test]
    fn writes_are_atomic_and_scratch_stays_out_of_the_metadata_dir() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        store.save("timestamp", b"one").unwrap();
        store.save("timestamp", b"two").unwrap();
        assert_eq!(store.load("timestamp").unwrap(), b"two");
        let json: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".json"))
            .collect();
        assert_eq!(json, ["timestamp.json"]);
        store.remove("timestamp");
        assert!(store.load("timestamp").is_none());
    }

    #[test]
    fn a_memory_store_keeps_what_it_is_given() {
        let store = Store::memory();
        store.save("root", b"r").unwrap();
        assert_eq!(store.clone().load("root").unwrap(), b"r");
        store.remove("root");
        assert!(store.load("root").is_none());
    }
}
