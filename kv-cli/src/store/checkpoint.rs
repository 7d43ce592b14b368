//! Where an import or a copy stopped, kept in a small JSON file so `--resume` carries on after
//! a kill. Written whole to a temporary file, synced and renamed over the old one: a kill at any
//! moment leaves the previous checkpoint or the next, never half of one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A checkpoint file.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    path: PathBuf,
}

impl Checkpoint {
    /// The checkpoint at `path`.
    pub fn at(path: impl Into<PathBuf>) -> Checkpoint {
        Checkpoint { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state, `None` if there is none.
    pub fn load<T: DeserializeOwned>(&self) -> anyhow::Result<Option<T>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(err).with_context(|| format!("reading {}", self.path.display()));
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{}: not a checkpoint of this command", self.path.display()))
    }

    /// Replaces the saved state with `state`.
    pub fn save<T: Serialize>(&self, state: &T) -> anyhow::Result<()> {
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut file = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("creating a checkpoint in {}", dir.display()))?;
        serde_json::to_writer(&mut file, state)?;
        file.write_all(b"\n")?;
        file.as_file().sync_all()?;
        file.persist(&self.path)
            .with_context(|| format!("writing {}", self.path.display()))?;
        Ok(())
    }

    /// Removes the file once the work is done.
    pub fn remove(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(err).with_context(|| format!("removing {}", self.path.display()))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_replaces_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::at(dir.path().join("state.json"));
        assert_eq!(checkpoint.load::<u32>().unwrap(), None);
        checkpoint.save(&1u32).unwrap();
        checkpoint.save(&2u32).unwrap();
        assert_eq!(checkpoint.load::<u32>().unwrap(), Some(2));
        // Only the checkpoint is left: every temporary file was renamed over it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::write(checkpoint.path(), "{").unwrap();
        let err = checkpoint.load::<u32>().unwrap_err().to_string();
        assert!(err.contains("not a checkpoint"), "{err}");
        checkpoint.remove().unwrap();
        checkpoint.remove().unwrap();
        assert_eq!(checkpoint.load::<u32>().unwrap(), None);
    }
}
