//! The file system a store's snapshot files live on: the host's ([`StdFileSystem`]), or an
//! in-memory one that a simulated power cut rolls back ([`MemFileSystem`]).
//!
//! Only what snapshot files need is here: create, write, fsync, rename, hard link, remove,
//! list one directory, fsync a directory, and free space. An engine's SST files live on the
//! same file system as its snapshots ([`crate::SstExt::file_system`]), so the snapshot
//! manager, the SST writer and ingest all see one disk.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A file being written.
pub trait FileWriter: Write + Send {
    /// Makes what was written durable (fsync).
    fn sync(&mut self) -> io::Result<()>;
}

pub trait FileSystem: Send + Sync + fmt::Debug {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates `path`, or truncates it, for writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn FileWriter>>;
    fn open(&self, path: &Path) -> io::Result<Box<dyn Read + Send>>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open(path)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
    /// Makes a written file's contents durable (its name needs [`FileSystem::sync_dir`]).
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to`; durable once the directory is synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// A second name for `from`'s contents; fails if `to` exists.
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// The names of the files directly in `dir`.
    fn file_names(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes the names in `dir` (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Total and available bytes of the file system holding `dir`.
    fn space(&self, dir: &Path) -> io::Result<(u64, u64)>;
}

pub type FsRef = Arc<dyn FileSystem>;

/// The host's file system (`std::fs`, `statvfs`): what ships.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFileSystem;

impl StdFileSystem {
    pub fn shared() -> FsRef {
        Arc::new(StdFileSystem)
    }
}

impl FileWriter for std::fs::File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

impl FileSystem for StdFileSystem {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FileWriter>> {
        Ok(Box::new(std::fs::File::create(path)?))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(std::fs::File::open(path)?))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::hard_link(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn file_names(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        // An entry that cannot be read is skipped, not the whole listing.
        for entry in std::fs::read_dir(dir)?.flatten() {
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }

    fn space(&self, dir: &Path) -> io::Result<(u64, u64)> {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: plain old data, filled in by statvfs below.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid NUL-terminated path and a properly sized out-parameter.
        if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let block = stat.f_frsize as u64;
        Ok((stat.f_blocks as u64 * block, stat.f_bavail as u64 * block))
    }
}

/// An in-memory file system with POSIX's durability rules, for simulation: a file's contents
/// survive a power cut as of its last fsync, and a name (creation, rename, link, removal) as
/// of its directory's last fsync. Directories themselves are durable once made.
#[derive(Clone, Debug)]
pub struct MemFileSystem {
    state: Arc<Mutex<MemFsState>>,
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    /// The contents as of the last fsync: what a power cut leaves.
    synced: Vec<u8>,
}

#[derive(Debug)]
struct MemFsState {
    /// Inodes by number: names are links to them.
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// The names now.
    live: BTreeMap<PathBuf, u64>,
    /// The names a power cut leaves.
    durable: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    capacity: u64,
}

/// What a power cut of a [`MemFileSystem`] lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsLoss {
    /// Names whose creation, rename or removal had not been made durable.
    pub names: usize,
    /// Bytes written but not synced, in files that survived.
    pub bytes: usize,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl Default for MemFileSystem {
    fn default() -> Self {
        MemFileSystem::new()
    }
}

impl MemFileSystem {
    /// An empty file system of 1 TiB.
    pub fn new() -> MemFileSystem {
        MemFileSystem {
            state: Arc::new(Mutex::new(MemFsState {
                inodes: BTreeMap::new(),
                next_inode: 1,
                live: BTreeMap::new(),
                durable: BTreeMap::new(),
                dirs: BTreeSet::from([PathBuf::from("/")]),
                capacity: 1 << 40,
            })),
        }
    }

    /// A power cut: names go back to their directories' last fsync and each surviving file to
    /// its last fsync, plus the first `torn(unsynced bytes)` bytes written since (what the
    /// disk had written out; appends only). Returns what was lost.
    pub fn power_cut(&self, mut torn: impl FnMut(usize) -> usize) -> FsLoss {
        let mut state = util::lock(&self.state);
        let names = state
            .live
            .iter()
            .filter(|(path, inode)| state.durable.get(*path) != Some(inode))
            .count()
            + state
                .durable
                .keys()
                .filter(|path| !state.live.contains_key(*path))
                .count();
        state.live = state.durable.clone();
        let kept: BTreeSet<u64> = state.live.values().copied().collect();
        state.inodes.retain(|id, _| kept.contains(id));
        let mut bytes = 0;
        for inode in state.inodes.values_mut() {
            let appended = inode.data.starts_with(&inode.synced);
            let unsynced = inode.data.len().saturating_sub(inode.synced.len());
            let keep = if appended {
                torn(unsynced).min(unsynced)
            } else {
                0
            };
            bytes += unsynced - keep;
            let new_len = inode.synced.len() + keep;
            if appended {
                inode.data.truncate(new_len);
            } else {
                inode.data = inode.synced.clone();
            }
            inode.synced = inode.data.clone();
        }
        FsLoss { names, bytes }
    }

    /// Bytes in files now.
    pub fn used(&self) -> u64 {
        util::lock(&self.state).used()
    }
}

impl MemFsState {
    fn used(&self) -> u64 {
        self.inodes.values().map(|i| i.data.len() as u64).sum()
    }

    fn inode(&self, path: &Path) -> io::Result<u64> {
        self.live.get(path).copied().ok_or_else(|| not_found(path))
    }

    /// Frees the contents no name, live or durable, refers to any more.
    fn drop_unreferenced(&mut self) {
        let referenced: BTreeSet<u64> = self
            .live
            .values()
            .chain(self.durable.values())
            .copied()
            .collect();
        self.inodes.retain(|id, _| referenced.contains(id));
    }

    fn check_parent(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(dir) if self.dirs.contains(dir) => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such directory", path.display()),
            )),
        }
    }
}

struct MemFileWriter {
    fs: MemFileSystem,
    inode: u64,
}

impl Write for MemFileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = util::lock(&self.fs.state);
        if state.used() + buf.len() as u64 > state.capacity {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device",
            ));
        }
        // A file removed while open: its contents are gone (freed at the unlink, where POSIX
        // frees them at close), so the writes vanish.
        if let Some(inode) = state.inodes.get_mut(&self.inode) {
            inode.data.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FileWriter for MemFileWriter {
    fn sync(&mut self) -> io::Result<()> {
        let mut state = util::lock(&self.fs.state);
        if let Some(inode) = state.inodes.get_mut(&self.inode) {
            inode.synced = inode.data.clone();
        }
        Ok(())
    }
}

impl FileSystem for MemFileSystem {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = util::lock(&self.state);
        for ancestor in dir.ancestors() {
            if !ancestor.as_os_str().is_empty() {
                state.dirs.insert(ancestor.to_owned());
            }
        }
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FileWriter>> {
        let mut state = util::lock(&self.state);
        state.check_parent(path)?;
        let inode = match state.live.get(path) {
            Some(&inode) => {
                if let Some(file) = state.inodes.get_mut(&inode) {
                    file.data.clear();
                }
                inode
            }
            None => {
                let inode = state.next_inode;
                state.next_inode += 1;
                state.inodes.insert(inode, Inode::default());
                state.live.insert(path.to_owned(), inode);
                inode
            }
        };
        Ok(Box::new(MemFileWriter {
            fs: self.clone(),
            inode,
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::Cursor::new(self.read(path)?)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = util::lock(&self.state);
        let inode = state.inode(path)?;
        Ok(state
            .inodes
            .get(&inode)
            .map(|i| i.data.clone())
            .unwrap_or_default())
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let mut state = util::lock(&self.state);
        let inode = state.inode(path)?;
        if let Some(file) = state.inodes.get_mut(&inode) {
            file.synced = file.data.clone();
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = util::lock(&self.state);
        state.check_parent(to)?;
        let inode = state.inode(from)?;
        state.live.remove(from);
        state.live.insert(to.to_owned(), inode);
        state.drop_unreferenced();
        Ok(())
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = util::lock(&self.state);
        state.check_parent(to)?;
        let inode = state.inode(from)?;
        if state.live.contains_key(to) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: file exists", to.display()),
            ));
        }
        state.live.insert(to.to_owned(), inode);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = util::lock(&self.state);
        state.inode(path)?;
        state.live.remove(path);
        state.drop_unreferenced();
        Ok(())
    }

    fn file_names(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = util::lock(&self.state);
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(state
            .live
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = util::lock(&self.state);
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        state.durable.retain(|path, _| path.parent() != Some(dir));
        let names: Vec<(PathBuf, u64)> = state
            .live
            .iter()
            .filter(|(path, _)| path.parent() == Some(dir))
            .map(|(path, inode)| (path.clone(), *inode))
            .collect();
        state.durable.extend(names);
        state.drop_unreferenced();
        Ok(())
    }

    fn space(&self, _dir: &Path) -> io::Result<(u64, u64)> {
        let state = util::lock(&self.state);
        Ok((state.capacity, state.capacity.saturating_sub(state.used())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(fs: &MemFileSystem, path: &str, data: &[u8], sync: bool) {
        let mut file = fs.create(Path::new(path)).unwrap();
        file.write_all(data).unwrap();
        if sync {
            file.sync().unwrap();
        }
    }

    fn names(fs: &MemFileSystem) -> Vec<String> {
        let mut names = fs.file_names(Path::new("/d")).unwrap();
        names.sort();
        names
    }

    #[test]
    fn a_power_cut_keeps_what_was_synced_and_names_whose_directory_was() {
        let fs = MemFileSystem::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        write(&fs, "/d/a.tmp", b"all of a", true);
        fs.rename(Path::new("/d/a.tmp"), Path::new("/d/a")).unwrap();
        fs.sync_dir(Path::new("/d")).unwrap();
        // Named durably, contents never synced: survives empty.
        write(&fs, "/d/b", b"bbbb", false);
        fs.sync_dir(Path::new("/d")).unwrap();
        // Synced contents, name never made durable: gone.
        write(&fs, "/d/c", b"cc", true);
        // A removal not made durable comes back.
        fs.remove_file(Path::new("/d/a")).unwrap();

        let loss = fs.power_cut(|_| 0);
        assert_eq!(names(&fs), ["a", "b"]);
        assert_eq!(fs.read(Path::new("/d/a")).unwrap(), b"all of a");
        assert_eq!(fs.read(Path::new("/d/b")).unwrap(), b"");
        assert!(fs.read(Path::new("/d/c")).is_err());
        assert_eq!(loss, FsLoss { names: 2, bytes: 4 });
    }

    #[test]
    fn a_torn_write_keeps_a_prefix_of_the_unsynced_bytes() {
        let fs = MemFileSystem::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let mut file = fs.create(Path::new("/d/f")).unwrap();
        file.write_all(b"head").unwrap();
        file.sync().unwrap();
        file.write_all(b"tail").unwrap();
        fs.sync_dir(Path::new("/d")).unwrap();
        let loss = fs.power_cut(|unsynced| unsynced / 2);
        assert_eq!(fs.read(Path::new("/d/f")).unwrap(), b"headta");
        assert_eq!(loss.bytes, 2);
    }

    #[test]
    fn hard_links_share_contents_and_a_file_needs_its_directory() {
        let fs = MemFileSystem::new();
        assert!(fs.create(Path::new("/none/f")).is_err());
        fs.create_dir_all(Path::new("/d")).unwrap();
        write(&fs, "/d/f", b"x", true);
        fs.hard_link(Path::new("/d/f"), Path::new("/d/g")).unwrap();
        assert!(fs.hard_link(Path::new("/d/f"), Path::new("/d/g")).is_err());
        fs.remove_file(Path::new("/d/f")).unwrap();
        assert_eq!(fs.read(Path::new("/d/g")).unwrap(), b"x");
        assert_eq!(
            fs.space(Path::new("/d")).unwrap().0 - fs.used(),
            (1 << 40) - 1
        );
    }
}
