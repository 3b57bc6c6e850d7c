//! Where `stepup call` keeps tokens between runs: one JSON file, readable by
//! its user only, that concurrent runs update without losing each other's
//! tokens and that no other local user can redirect.
//!
//! A write goes through a fresh file with a random name, created
//! exclusively (so a planted symlink or file is never followed nor
//! reused), made 0600, synced, then renamed over the old one. The
//! directory is created 0700 when missing; a directory that exists is left
//! as it is (it may be shared: its permissions are its owner's business).
//! Runs take a lock on the directory while they read, merge and write, and
//! a run writes back only the resources whose tokens it changed, over what
//! the file holds then.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ring::rand::{SecureRandom, SystemRandom};
use stepup_client::Tokens;

/// Tokens per `issuer client_id`.
pub(crate) type Kept = BTreeMap<String, Tokens>;

/// The token file at a path.
pub(crate) struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    pub(crate) fn at(path: PathBuf) -> Self {
        Self { path }
    }

    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// What the file holds now (nothing when it does not exist). A file
    /// that is a symlink, or that others may write, is refused: tokens
    /// planted there would have the user call the API as someone else.
    pub(crate) fn load(&self) -> Result<Kept> {
        #[cfg(unix)]
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.file_type().is_symlink() {
                bail!(
                    "{} is a symbolic link: refusing to read tokens through it",
                    self.path.display()
                );
            }
            if meta.permissions().mode() & 0o022 != 0 {
                bail!(
                    "{} may be written by other users: refusing to read tokens from it",
                    self.path.display()
                );
            }
        }
        match fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).with_context(|| format!("reading {}", self.path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Kept::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }

    /// Writes back what this run changed for `key`, from `before` (as
    /// loaded) to `after`, over what the file holds now, under the lock.
    pub(crate) fn save_changes(&self, key: &str, before: &Tokens, after: &Tokens, now: i64) -> Result<()> {
        self.create_dir()?;
        let _lock = self.lock()?;
        let mut kept = self.load()?;
        let tokens = kept.entry(key.to_owned()).or_default();
        tokens.merge_changes(before, after);
        tokens.prune(now);
        if tokens.resources().next().is_none() {
            kept.remove(key);
        }
        self.replace(&serde_json::to_vec_pretty(&kept)?)
    }

    /// Creates the directory, 0700, if it is missing; never touches one
    /// that exists.
    fn create_dir(&self) -> Result<()> {
        let dir = self.dir();
        if dir.is_dir() {
            return Ok(());
        }
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))
    }

    /// An exclusive lock held until dropped: on the directory itself on
    /// Unix (no lock file to plant), else on a lock file beside the tokens.
    fn lock(&self) -> Result<fs::File> {
        #[cfg(unix)]
        let file = fs::File::open(self.dir());
        #[cfg(not(unix))]
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.with_extension("lock"));
        let file = file.with_context(|| format!("opening {} to lock it", self.dir().display()))?;
        file.lock()
            .with_context(|| format!("locking {}", self.dir().display()))?;
        Ok(file)
    }

    /// Replaces the file with `contents`: a new file with a random name,
    /// created exclusively (a symlink there makes it fail, not followed),
    /// 0600, synced, renamed over the old one.
    fn replace(&self, contents: &[u8]) -> Result<()> {
        let mut random = [0u8; 12];
        if SystemRandom::new().fill(&mut random).is_err() {
            bail!("no randomness for a temporary file name");
        }
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "tokens.json".to_owned());
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = self.dir().join(format!(".{name}.{hex}.tmp"));
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let written = (|| -> Result<()> {
            let mut file = options
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            file.write_all(contents)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path).with_context(|| format!("writing {}", self.path.display()))?;
            Ok(())
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        // The rename itself made durable.
        #[cfg(unix)]
        if let Ok(dir) = fs::File::open(self.dir()) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stepup-token-file-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[cfg(unix)]
    #[test]
    fn a_new_directory_is_private_and_an_existing_one_is_left_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("perms");
        let file = TokenFile::at(dir.join("new/tokens.json"));
        file.save_changes("k", &Tokens::default(), &Tokens::default(), 0)
            .unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("new")), 0o700);
        assert_eq!(mode(&dir.join("new/tokens.json")), 0o600);
        // A shared directory the user pointed at keeps its permissions.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        TokenFile::at(dir.join("tokens.json"))
            .save_changes("k", &Tokens::default(), &Tokens::default(), 0)
            .unwrap();
        assert_eq!(mode(&dir), 0o755);
        assert_eq!(mode(&dir.join("tokens.json")), 0o600);
        // No temporary file is left behind.
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_symlink_is_never_written_through() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("symlink");
        fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim.txt");
        fs::write(&victim, "precious").unwrap();
        // The old writer used the fixed name tokens.json.tmp: a symlink
        // planted there had the tokens written through it.
        std::os::unix::fs::symlink(&victim, dir.join("tokens.json.tmp")).unwrap();
        let file = TokenFile::at(dir.join("tokens.json"));
        file.save_changes("k", &Tokens::default(), &Tokens::default(), 0)
            .unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        // A token file that is a symlink, or writable by others, is not
        // read (nor, then, written).
        fs::remove_file(dir.join("tokens.json")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("tokens.json")).unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(
            file.save_changes("k", &Tokens::default(), &Tokens::default(), 0)
                .is_err()
        );
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        fs::remove_file(dir.join("tokens.json")).unwrap();
        fs::write(dir.join("tokens.json"), "{}").unwrap();
        fs::set_permissions(dir.join("tokens.json"), fs::Permissions::from_mode(0o666)).unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains("other users"), "{err}");
    }

    /// Tokens for `resource`, as a file would hold them.
    fn tokens_for(resource: &str) -> Tokens {
        serde_json::from_value(serde_json::json!({"resources": [{
            "metadata": {"resource": resource, "authorization_servers": ["https://as"]},
            "base": {"access_token": "t", "refresh_token": null, "expires_at": null,
                     "scope": [], "obtained_at": 1}
        }]}))
        .unwrap()
    }

    #[test]
    fn runs_saving_at_once_lose_nothing() {
        let dir = temp_dir("concurrent");
        let path = dir.join("tokens.json");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    TokenFile::at(path)
                        .save_changes("k", &Tokens::default(), &tokens_for(&format!("https://r{i}")), 0)
                        .unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let kept = TokenFile::at(path).load().unwrap();
        let mut resources: Vec<&str> = kept["k"].resources().collect();
        resources.sort_unstable();
        assert_eq!(
            resources,
            (0..8).map(|i| format!("https://r{i}")).collect::<Vec<_>>()
        );
    }
}
