//! Where `stepup call` keeps tokens between runs: one JSON file, readable by
//! its user only, that concurrent runs update without losing each other's
//! tokens and that no other local user can redirect.
//!
//! The directory is opened once, and every check and operation goes
//! through that descriptor (on Unix: `fstat`, `openat`, `renameat`), so a
//! path component swapped between a check and a use changes nothing. A
//! write goes through a fresh file with a random name, created exclusively
//! (so a planted symlink or file is never followed nor reused), 0600,
//! synced, then renamed over the old one. The directory is created 0700
//! when missing; a directory that exists is left as it is (it may be
//! shared: its permissions are its owner's business). Runs take a lock (a
//! file beside the tokens) while they read, merge and write, and a run writes back
//! only the resources whose tokens it changed, over what the file holds
//! then.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ring::rand::{SecureRandom, SystemRandom};
use stepup_client::Tokens;

/// How long a run waits for another's save or refresh (a refresh is made
/// under the lock: its token request takes at most 10 s, twice with a
/// DPoP nonce, and the issuer's keys may be read again, 10 s more).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Tokens per `issuer client_id`.
pub(crate) type Kept = BTreeMap<String, Tokens>;

/// The token file at a path.
#[derive(Debug, Clone)]
pub(crate) struct TokenFile {
    path: PathBuf,
}

/// The token file, locked, and what it held for one client when locked.
pub(crate) struct LockedFile {
    file: TokenFile,
    /// Holds the lock, and is what every write goes through.
    dir: Dir,
    key: String,
    kept: Kept,
    tokens: Tokens,
}

impl LockedFile {
    /// Writes back what changed for the client from `before` to `after`
    /// over what the file holds, still under the lock.
    pub(crate) fn save_changes(&mut self, before: &Tokens, after: &Tokens, now: i64) -> Result<()> {
        let mut kept = self.kept.clone();
        let tokens = kept.entry(self.key.clone()).or_default();
        tokens.merge_changes(before, after).map_err(|e| {
            anyhow::anyhow!("{e}: not kept (--forget-tokens starts over with another account)")
        })?;
        tokens.prune(now);
        let tokens = tokens.clone();
        if tokens.is_empty() {
            kept.remove(&self.key);
        }
        self.dir
            .replace(&self.file.name()?, &serde_json::to_vec_pretty(&kept)?)?;
        self.kept = kept;
        self.tokens = tokens;
        Ok(())
    }
}

/// The token file as `stepup-client` shares it between runs: a refresh is
/// made under the file's lock and kept at once, so that two runs never
/// spend one refresh token (the server would revoke both).
pub(crate) struct SharedFile {
    pub(crate) file: TokenFile,
    pub(crate) key: String,
}

impl stepup_client::SharedTokens for SharedFile {
    fn lock(&self) -> std::result::Result<Box<dyn stepup_client::LockedTokens>, String> {
        self.file
            .locked(&self.key)
            .map(|l| Box::new(l) as Box<dyn stepup_client::LockedTokens>)
            .map_err(|e| format!("{e:#}"))
    }
}

impl stepup_client::LockedTokens for LockedFile {
    fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    fn keep(&mut self, before: &Tokens, after: &Tokens) -> std::result::Result<(), String> {
        self.save_changes(before, after, unix_now())
            .map_err(|e| format!("{e:#}"))
    }
}

/// Now, in seconds since the epoch.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl TokenFile {
    pub(crate) fn at(path: PathBuf) -> Self {
        Self { path }
    }

    fn dir_path(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// The file's name in its directory.
    fn name(&self) -> Result<OsString> {
        match self.path.file_name() {
            Some(name) => Ok(name.to_owned()),
            None => bail!("{} names no file", self.path.display()),
        }
    }

    /// What the file holds now (nothing when it or its directory does not
    /// exist). See [`Dir::open`] and [`Dir::read`] for what is refused:
    /// tokens planted by another user would have this user call the API as
    /// someone else.
    pub(crate) fn load(&self) -> Result<Kept> {
        match Dir::open(self.dir_path())? {
            Some(dir) => dir.read(&self.name()?),
            None => Ok(Kept::new()),
        }
    }

    /// Writes back what this run changed for `key`, from `before` (as
    /// loaded) to `after`, over what the file holds now, under the lock.
    pub(crate) fn save_changes(&self, key: &str, before: &Tokens, after: &Tokens, now: i64) -> Result<()> {
        self.locked(key)?.save_changes(before, after, now)
    }

    /// The file locked (until dropped), with what it holds for `key`. The
    /// directory is created when missing.
    pub(crate) fn locked(&self, key: &str) -> Result<LockedFile> {
        self.create_dir()?;
        let Some(mut dir) = Dir::open(self.dir_path())? else {
            bail!("{} disappeared", self.dir_path().display());
        };
        dir.lock(&self.name()?)?;
        let kept = dir.read(&self.name()?)?;
        let tokens = kept.get(key).cloned().unwrap_or_default();
        Ok(LockedFile {
            file: self.clone(),
            dir,
            key: key.to_owned(),
            kept,
            tokens,
        })
    }

    /// Creates the directory, 0700, if it is missing; never touches one
    /// that exists.
    fn create_dir(&self) -> Result<()> {
        let dir = self.dir_path();
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
}

/// The token file's directory, opened once. On Unix it is a descriptor:
/// its checks are made on what was opened, and the file is read, created
/// and renamed relative to it.
struct Dir {
    path: PathBuf,
    #[cfg(unix)]
    fd: fs::File,
    /// The lock file, once locked.
    lock_file: Option<fs::File>,
}

impl Dir {
    /// Opens the directory at `path` (`None` when it does not exist). It
    /// must be this user's or root's, and others must not be able to write
    /// in it unless it is sticky (as `/tmp`): else they could put their
    /// file in place of this user's.
    fn open(path: &Path) -> Result<Option<Self>> {
        #[cfg(unix)]
        {
            use rustix::fs::{Mode, OFlags};
            use std::os::unix::fs::MetadataExt;
            let shown = path.display();
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            let fd = match rustix::fs::open(path, flags, Mode::empty()) {
                Ok(fd) => fs::File::from(fd),
                Err(rustix::io::Errno::NOENT) => return Ok(None),
                Err(e) => return Err(std::io::Error::from(e)).with_context(|| format!("opening {shown}")),
            };
            let meta = fd.metadata().with_context(|| format!("reading {shown}"))?;
            let me = rustix::process::geteuid().as_raw();
            if meta.uid() != me && meta.uid() != 0 {
                bail!("{shown} belongs to another user: refusing to keep tokens in it");
            }
            if meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0 {
                bail!(
                    "other users may write in {shown} (mode {:o}): refusing to keep tokens in it",
                    meta.mode() & 0o7777
                );
            }
            Ok(Some(Self {
                path: path.to_owned(),
                fd,
                lock_file: None,
            }))
        }
        #[cfg(not(unix))]
        {
            Ok(path.is_dir().then(|| Self {
                path: path.to_owned(),
                lock_file: None,
            }))
        }
    }

    /// What the file `name` holds (nothing when it does not exist). It is
    /// opened without following a link and without waiting on a pipe, and
    /// the open file must be a regular file of this user's, readable and
    /// writable by no one else, with no other name (a hard link).
    fn read(&self, name: &std::ffi::OsStr) -> Result<Kept> {
        let path = self.path.join(name);
        let shown = path.display();
        #[cfg(unix)]
        let mut file = {
            use rustix::fs::{Mode, OFlags};
            use std::os::unix::fs::MetadataExt;
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
            let file = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
                Ok(fd) => fs::File::from(fd),
                Err(rustix::io::Errno::NOENT) => return Ok(Kept::new()),
                Err(rustix::io::Errno::LOOP) => {
                    bail!("{shown} is a symbolic link: refusing to read tokens through it")
                }
                Err(e) => return Err(std::io::Error::from(e)).with_context(|| format!("reading {shown}")),
            };
            let meta = file.metadata().with_context(|| format!("reading {shown}"))?;
            if !meta.is_file() {
                bail!("{shown} is not a regular file: refusing to read tokens from it");
            }
            if meta.uid() != rustix::process::geteuid().as_raw() {
                bail!("{shown} belongs to another user: refusing to read tokens from it");
            }
            if meta.mode() & 0o077 != 0 {
                bail!(
                    "{shown} may be read or written by other users (mode {:o}): refusing to read tokens from it; make it 0600",
                    meta.mode() & 0o777
                );
            }
            if meta.nlink() != 1 {
                bail!("{shown} has other names (hard links): refusing to read tokens from it");
            }
            file
        };
        #[cfg(not(unix))]
        let mut file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Kept::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {shown}")),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .with_context(|| format!("reading {shown}"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("reading {shown}"))
    }

    /// Takes an exclusive lock, held until the directory is dropped, on a
    /// lock file beside the tokens (`.NAME.lock`, 0600, this user's; on
    /// Unix opened through the directory, without following a link). Not
    /// on the directory itself: anyone who can read a directory can lock
    /// it. A process that holds it for ever (another user's lock file in a
    /// shared directory is refused) makes this fail after [`LOCK_WAIT`],
    /// saying why.
    fn lock(&mut self, name: &std::ffi::OsStr) -> Result<()> {
        let lock_name = format!(".{}.lock", name.to_string_lossy());
        let shown = self.path.join(&lock_name);
        #[cfg(unix)]
        let file = {
            use rustix::fs::{Mode, OFlags};
            use std::os::unix::fs::MetadataExt;
            let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
            let file =
                match rustix::fs::openat(&self.fd, lock_name.as_str(), flags, Mode::from_raw_mode(0o600)) {
                    Ok(fd) => fs::File::from(fd),
                    Err(rustix::io::Errno::LOOP) => {
                        bail!("{} is a symbolic link: refusing to lock it", shown.display())
                    }
                    Err(e) => {
                        return Err(std::io::Error::from(e))
                            .with_context(|| format!("opening {}", shown.display()));
                    }
                };
            let meta = file
                .metadata()
                .with_context(|| format!("reading {}", shown.display()))?;
            if !meta.is_file() || meta.uid() != rustix::process::geteuid().as_raw() {
                bail!(
                    "{} is not a file of this user's: refusing to lock it",
                    shown.display()
                );
            }
            file
        };
        #[cfg(not(unix))]
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&shown)
            .with_context(|| format!("opening {}", shown.display()))?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(fs::TryLockError::WouldBlock) => bail!(
                    "{} stayed locked by another process for {} s",
                    shown.display(),
                    LOCK_WAIT.as_secs()
                ),
                Err(fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("locking {}", shown.display()));
                }
            }
        }
        self.lock_file = Some(file);
        Ok(())
    }

    /// Replaces the file `name` with `contents`: a new file with a random
    /// name, created exclusively (a symlink there makes it fail, not
    /// followed), 0600, synced, renamed over the old one.
    fn replace(&self, name: &std::ffi::OsStr, contents: &[u8]) -> Result<()> {
        let mut random = [0u8; 12];
        if SystemRandom::new().fill(&mut random).is_err() {
            bail!("no randomness for a temporary file name");
        }
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = format!(".{}.{hex}.tmp", name.to_string_lossy());
        let shown = self.path.join(&tmp);
        #[cfg(unix)]
        {
            use rustix::fs::{Mode, OFlags};
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let written = (|| -> Result<()> {
                let mut file = fs::File::from(
                    rustix::fs::openat(&self.fd, tmp.as_str(), flags, Mode::from_raw_mode(0o600))
                        .map_err(std::io::Error::from)
                        .with_context(|| format!("creating {}", shown.display()))?,
                );
                file.write_all(contents)?;
                file.sync_all()?;
                rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name)
                    .map_err(std::io::Error::from)
                    .with_context(|| format!("writing {}", self.path.join(name).display()))?;
                Ok(())
            })();
            if written.is_err() {
                let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), rustix::fs::AtFlags::empty());
            }
            written?;
            // The rename itself made durable.
            let _ = self.fd.sync_all();
        }
        #[cfg(not(unix))]
        {
            let written = (|| -> Result<()> {
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&shown)
                    .with_context(|| format!("creating {}", shown.display()))?;
                file.write_all(contents)?;
                file.sync_all()?;
                fs::rename(&shown, self.path.join(name))
                    .with_context(|| format!("writing {}", self.path.join(name).display()))?;
                Ok(())
            })();
            if written.is_err() {
                let _ = fs::remove_file(&shown);
            }
            written?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory for a test, 0700 whatever the umask (tests that
    /// want it missing remove it).
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stepup-token-file-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        }
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

    #[cfg(unix)]
    #[test]
    fn a_planted_token_file_is_refused_on_what_was_opened() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("planted");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens.json");
        let file = TokenFile::at(path.clone());
        let refused = |expected: &str| {
            let err = format!("{:#}", file.load().unwrap_err());
            assert!(err.contains(expected), "{expected}: {err}");
        };
        // Readable by others.
        fs::write(&path, "{}").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        refused("other users");
        // A second name: a hard link someone else can still reach.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::hard_link(&path, dir.join("other-name")).unwrap();
        refused("hard links");
        fs::remove_file(dir.join("other-name")).unwrap();
        assert!(file.load().unwrap().is_empty());
        // A pipe: refused at once, not waited on.
        fs::remove_file(&path).unwrap();
        #[cfg(not(target_vendor = "apple"))]
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        #[cfg(not(target_vendor = "apple"))]
        {
            refused("not a regular file");
            fs::remove_file(&path).unwrap();
        }
        // A directory others may write in (not sticky).
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        refused("other users may write in");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(file.load().unwrap().is_empty(), "sticky, as /tmp");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        // Another user's file (only root can make one to test with).
        if rustix::process::geteuid().is_root() {
            fs::write(&path, "{}").unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            refused("belongs to another user");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_swapped_after_its_checks_is_not_written_to() {
        use std::os::unix::fs::PermissionsExt;
        let base = temp_dir("swap");
        let dir = base.join("tokens");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let file = TokenFile::at(dir.join("tokens.json"));
        let mut locked = file.locked("k").unwrap();
        // Between the checks and the write, the directory is moved away
        // and another, open to every user, put in its place.
        fs::rename(&dir, base.join("moved")).unwrap();
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        locked
            .save_changes(&Tokens::default(), &tokens_for("https://r"), 0)
            .unwrap();
        assert!(
            fs::read_dir(&dir).unwrap().next().is_none(),
            "nothing written in the planted directory"
        );
        let kept = TokenFile::at(base.join("moved/tokens.json")).load().unwrap();
        assert_eq!(kept["k"].resources().collect::<Vec<_>>(), ["https://r"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_lock_is_a_private_file_not_the_directory() {
        let dir = temp_dir("lockfile");
        let file = TokenFile::at(dir.join("tokens.json"));
        // Holding a lock on the directory (anyone who can read it can)
        // stops no one.
        let held = fs::File::open(&dir).unwrap();
        held.lock().unwrap();
        file.save_changes("k", &Tokens::default(), &tokens_for("https://r"), 0)
            .unwrap();
        drop(held);
        // A lock file planted as a link is refused, not followed.
        let victim = dir.join("victim");
        fs::write(&victim, "x").unwrap();
        fs::remove_file(dir.join(".tokens.json.lock")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(".tokens.json.lock")).unwrap();
        let err = format!("{:#}", file.locked("k").err().unwrap());
        assert!(err.contains("symbolic link"), "{err}");
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
