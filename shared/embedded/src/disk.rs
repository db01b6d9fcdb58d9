//! The data directory: one fjall database that the durable queue and store share, written by
//! one thread that commits whatever has been submitted since its last sync as one atomic batch
//! with one fsync (group commit), so concurrent senders share a sync instead of queueing for
//! one each.
//!
//! Submissions reach the journal in the order they were made, and a crash can only lose a
//! suffix of them. So only a write that answers a client needs the sync itself ([`Wait::Synced`]:
//! a sent message); a write whose effect is only undone by a later one ([`Wait::Written`]: a
//! store commit, followed by the delete of its records) needs only to be ahead of that later
//! write, and a group of such writes is committed without an fsync of its own: the next sync,
//! or the writer's quarter-second timer, makes it durable.
//!
//! Every commit also writes its sequence number, and the writer records the last synced one in
//! `acknowledged`, beside the database: before it answers a synced group, and within a quarter
//! second for groups nobody waits on. At open, a database whose last commit is older than that
//! file says has lost writes that were acknowledged (a journal cut short, a file restored from
//! an older copy), and opening fails instead of serving less than it promised.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::time::{Duration, Instant};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tokio::sync::oneshot;

/// What the directory holds, each in its own keyspace.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Space {
    /// channel → version and rocket.
    Rockets,
    /// channel `/` number → parked message.
    Parked,
    /// channel `/` number → applied message.
    History,
    /// sequence → queued message.
    Queue,
    /// sequence → receive count and first receive time.
    Receipts,
    /// sequence → dead letter.
    Dead,
    /// deduplication id → end of its window.
    Seen,
    /// format, commit counter, next sequence.
    Meta,
}

impl Space {
    const ALL: [Space; 8] = [
        Space::Rockets,
        Space::Parked,
        Space::History,
        Space::Queue,
        Space::Receipts,
        Space::Dead,
        Space::Seen,
        Space::Meta,
    ];

    fn name(self) -> &'static str {
        match self {
            Space::Rockets => "rockets",
            Space::Parked => "parked",
            Space::History => "history",
            Space::Queue => "queue",
            Space::Receipts => "receipts",
            Space::Dead => "dead",
            Space::Seen => "seen",
            Space::Meta => "meta",
        }
    }
}

/// A key and its value, as read.
pub(crate) type Item = (Vec<u8>, Vec<u8>);

/// One change to the directory; a submission's changes are committed together or not at all.
#[derive(Debug)]
pub(crate) enum Op {
    Put(Space, Vec<u8>, Vec<u8>),
    Delete(Space, Vec<u8>),
}

/// The key of a channel's item numbered `number` in [`Space::Parked`] or [`Space::History`]:
/// `/` never occurs in a channel, so one channel's keys never interleave with another's.
pub(crate) fn numbered_key(channel: &str, number: u64) -> Vec<u8> {
    let mut key = channel_prefix(channel);
    key.extend_from_slice(&number.to_be_bytes());
    key
}

pub(crate) fn channel_prefix(channel: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(channel.len() + 9);
    key.extend_from_slice(channel.as_bytes());
    key.push(b'/');
    key
}

const FORMAT: &[u8] = b"rockets-local data 1";
const FORMAT_KEY: &[u8] = b"format";
const COMMIT_KEY: &[u8] = b"commit";
const WATERMARK_FILE: &str = "acknowledged";
const WATERMARK_EVERY: Duration = Duration::from_millis(250);

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(
        "{0} is in use by another process (one rockets-local per data directory); stop it or choose another --data-dir"
    )]
    InUse(PathBuf),
    #[error(
        "{path} cannot be used: {detail}. It was damaged or cut short; restore it from a copy, or move it aside to start empty"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A write the directory could not make (a full disk, an I/O error). The directory then refuses
/// writes, saying why, until its writer has reopened the database on a disk that takes writes
/// again, with nothing on it that was not acknowledged (see [`Writer::recover`]).
#[derive(Clone, Debug, thiserror::Error)]
#[error("the data directory failed: {0}")]
pub struct DiskError(Arc<str>);

/// An open data directory; clones share it.
#[derive(Clone)]
pub struct DataDir {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    /// The keyspaces, for reads; `None` while the writer reopens the database.
    spaces: Arc<RwLock<Option<Spaces>>>,
    submit: Option<mpsc::Sender<Submission>>,
    /// Changes nobody waits for, taken by the writer with its next group.
    later: Arc<Mutex<Vec<Op>>>,
    /// Why the directory refuses writes, while it does.
    refusing: Arc<Mutex<Option<Arc<str>>>>,
    /// The free space writes stop short of.
    reserve: Arc<AtomicU64>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Shared {
    /// Lets the writer commit what was submitted, and waits for it to close the database, so
    /// that the directory can be opened again as soon as this returns.
    fn drop(&mut self) {
        self.submit.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[derive(Clone)]
struct Spaces(Vec<Keyspace>);

impl Spaces {
    fn get(&self, space: Space) -> &Keyspace {
        &self.0[space as usize]
    }
}

struct Submission {
    ops: Vec<Op>,
    wait: Wait,
    done: Option<oneshot::Sender<Result<(), DiskError>>>,
}

/// What a submission's waiter is answered after.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Wait {
    /// The submission is on stable storage.
    Synced,
    /// The submission is in the database, ahead of every later one on disk.
    Written,
}

/// Resolves once a submission is on stable storage.
pub(crate) struct Pending(Option<oneshot::Receiver<Result<(), DiskError>>>);

impl Pending {
    /// Waits until the submission is where its [`Wait`] asked.
    pub(crate) async fn done(self) -> Result<(), DiskError> {
        match self.0 {
            Some(done) => done
                .await
                .unwrap_or_else(|_| Err(DiskError("the writer stopped".into()))),
            None => Err(DiskError("an earlier write failed".into())),
        }
    }
}

impl DataDir {
    /// Opens the directory, creating it if missing. Fails if another process has it open, or
    /// if it is damaged.
    pub fn open(path: impl AsRef<Path>) -> Result<DataDir, DataDirError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| DataDirError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&path).map_err(io)?;
        let damaged = |detail: String| DataDirError::Damaged {
            path: path.clone(),
            detail,
        };
        let (db, spaces) = open_database(&path).map_err(|error| match error {
            fjall::Error::Locked => DataDirError::InUse(path.clone()),
            fjall::Error::Io(source) => io(source),
            other => damaged(other.to_string()),
        })?;
        let watermark_path = path.join(WATERMARK_FILE);
        let commit =
            last_commit(&db, &spaces, &watermark_path).map_err(|unusable| match unusable {
                Unusable::Damaged(detail) => damaged(detail),
                Unusable::Io(source) => io(source),
            })?;
        let (submit, submissions) = mpsc::channel();
        let refusing = Arc::new(Mutex::new(None));
        let reserve = Arc::new(AtomicU64::new(DISK_RESERVE));
        let later = Arc::new(Mutex::new(Vec::new()));
        let shared_spaces = Arc::new(RwLock::new(Some(spaces.clone())));
        let watermark = Watermark::open(&watermark_path).map_err(io)?;
        let writer = Writer {
            path: path.clone(),
            later: later.clone(),
            db: Some(db),
            spaces: Some(spaces),
            shared_spaces: shared_spaces.clone(),
            refusing: refusing.clone(),
            reserve: reserve.clone(),
            poisoned: false,
            recovered_at: Instant::now(),
            commit,
            synced: commit,
            watermark,
            watermarked: commit,
            watermark_at: Instant::now(),
        };
        let writer = std::thread::Builder::new()
            .name("rockets-writer".into())
            .spawn(move || writer.run(submissions))
            .map_err(io)?;
        Ok(DataDir {
            shared: Arc::new(Shared {
                path,
                spaces: shared_spaces,
                submit: Some(submit),
                later,
                refusing,
                reserve,
                writer: Some(writer),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Keeps `bytes` free on the disk: writes are refused once less is free ([`DISK_RESERVE`]
    /// by default).
    pub fn keep_free(&self, bytes: u64) {
        self.shared.reserve.store(bytes, Ordering::Relaxed);
    }

    /// Why the directory refuses writes, while it does.
    pub fn refusing(&self) -> Option<String> {
        let refusing = self
            .shared
            .refusing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        refusing.as_deref().map(str::to_owned)
    }

    /// One keyspace, for a read.
    fn keyspace(&self, space: Space) -> Result<Keyspace, DiskError> {
        let spaces = self.shared.spaces.read().unwrap_or_else(|e| e.into_inner());
        let spaces = spaces
            .as_ref()
            .ok_or_else(|| DiskError("the data directory is reopening".into()))?;
        Ok(spaces.get(space).clone())
    }

    /// Queues `ops` for the next group commit; the result says when they are where `wait`
    /// asks. Submissions are committed in the order they were made.
    pub(crate) fn submit(&self, ops: Vec<Op>, wait: Wait) -> Pending {
        if let Some(reason) = self.refusing() {
            let (done, pending) = oneshot::channel();
            let _ = done.send(Err(DiskError(reason.into())));
            return Pending(Some(pending));
        }
        let (done, pending) = oneshot::channel();
        let submission = Submission {
            ops,
            wait,
            done: Some(done),
        };
        match self.sender().send(submission) {
            Ok(()) => Pending(Some(pending)),
            Err(_) => Pending(None),
        }
    }

    /// Resolves once everything submitted before it is synced.
    pub(crate) fn barrier(&self) -> Pending {
        self.submit(Vec::new(), Wait::Synced)
    }

    /// Adds `ops` to the next group commit without waiting for it, or waking the writer for
    /// it: they go with the next submission that is waited for, or within a quarter second.
    /// They may be written ahead of submissions made just before them, so they must not depend
    /// on one that nothing has waited for yet.
    pub(crate) fn submit_later(&self, mut ops: Vec<Op>) {
        if !ops.is_empty() {
            let mut later = self.shared.later.lock().unwrap_or_else(|e| e.into_inner());
            later.append(&mut ops);
        }
    }

    fn sender(&self) -> &mpsc::Sender<Submission> {
        self.shared
            .submit
            .as_ref()
            .expect("only taken when the last handle is dropped")
    }

    pub(crate) fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError> {
        self.keyspace(space)?
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(read_error)
    }

    /// Up to `limit` items whose keys start with `prefix` and are at least `from`, in key order.
    pub(crate) fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Item>, DiskError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut taken = 0;
        self.scan_while(space, prefix, from, |_| {
            taken += 1;
            taken <= limit
        })
        .map(|(items, _)| items)
    }

    /// The items whose keys start with `prefix` and are at least `from`, in key order, for as
    /// long as `take` accepts their keys; and whether the range ran out before `take` refused.
    pub(crate) fn scan_while(
        &self,
        space: Space,
        prefix: &[u8],
        from: &[u8],
        mut take: impl FnMut(&[u8]) -> bool,
    ) -> Result<(Vec<Item>, bool), DiskError> {
        let keyspace = self.keyspace(space)?;
        let mut items = Vec::new();
        // Bounded above as well as below: an open range would walk every deleted key after the
        // prefix (each unparked message leaves one until compaction) before finding its end.
        let items_in = match prefix_end(prefix) {
            Some(end) => keyspace.range(from.to_vec()..end),
            None => keyspace.range(from.to_vec()..),
        };
        for guard in items_in {
            let (key, value) = guard.into_inner().map_err(read_error)?;
            if !key.starts_with(prefix) {
                break;
            }
            if !take(&key) {
                return Ok((items, false));
            }
            items.push((key.to_vec(), value.to_vec()));
        }
        Ok((items, true))
    }

    /// Every item of `space`, in key order.
    pub(crate) fn all(&self, space: Space) -> Result<Vec<Item>, DiskError> {
        self.scan(space, b"", b"", usize::MAX)
    }
}

/// The first key after every key that starts with `prefix`; `None` if there is none.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn read_error(error: fjall::Error) -> DiskError {
    DiskError(format!("read failed: {error}").into())
}

/// Asks the kernel to treat the writer as a batch thread: waking it for a submission then no
/// longer preempts the thread that submitted, which on a small machine is the one that has the
/// next request to serve.
fn batch_scheduling() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: changes only the calling thread's policy, with a valid parameter.
        let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if result != 0 {
            tracing::debug!("the writer keeps the default scheduling policy");
        }
    }
}

/// Why a directory cannot be used: what is damaged, or the I/O error that stopped the check.
enum Unusable {
    Damaged(String),
    Io(std::io::Error),
}

/// The last commit a directory's database holds, checked against the last one acknowledged
/// (`acknowledged`, at `watermark_path`); a new directory is given its format record first.
fn last_commit(db: &Database, spaces: &Spaces, watermark_path: &Path) -> Result<u64, Unusable> {
    let meta = spaces.get(Space::Meta);
    let read = |key: &[u8]| {
        (meta.get(key).map(|v| v.map(|v| v.to_vec()))).map_err(|e| Unusable::Damaged(e.to_string()))
    };
    match read(FORMAT_KEY)? {
        Some(format) if format == FORMAT => {
            let commit = read(COMMIT_KEY)?
                .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
                .ok_or_else(|| Unusable::Damaged("its commit counter is missing".into()))?;
            let acknowledged = std::fs::read_to_string(watermark_path)
                .map_err(|e| Unusable::Damaged(format!("{WATERMARK_FILE}: {e}")))?;
            let acknowledged: u64 = (acknowledged.trim().parse())
                .map_err(|_| Unusable::Damaged(format!("{WATERMARK_FILE} is not a number")))?;
            if commit < acknowledged {
                return Err(Unusable::Damaged(format!(
                    "its last commit is {commit}, but commit {acknowledged} was acknowledged"
                )));
            }
            Ok(commit)
        }
        Some(_) => Err(Unusable::Damaged(
            "it is not a rockets-local data directory".into(),
        )),
        None => {
            let empty =
                (Space::ALL.iter()).all(|space| spaces.get(*space).first_key_value().is_none());
            if !empty {
                return Err(Unusable::Damaged("its format record is missing".into()));
            }
            let mut batch = db.batch();
            batch.insert(meta, FORMAT_KEY, FORMAT);
            batch.insert(meta, COMMIT_KEY, 0u64.to_be_bytes().to_vec());
            batch
                .commit()
                .map_err(|e| Unusable::Damaged(e.to_string()))?;
            db.persist(PersistMode::SyncAll)
                .map_err(|e| Unusable::Damaged(e.to_string()))?;
            write_watermark(watermark_path, 0).map_err(Unusable::Io)?;
            Ok(0)
        }
    }
}

/// The database of the directory at `path`, and its keyspaces.
fn open_database(path: &Path) -> Result<(Database, Spaces), fjall::Error> {
    let db = Database::builder(path.join("db"))
        .cache_size(32 << 20)
        .max_journaling_size(64 << 20)
        .journal_compression(fjall::CompressionType::None)
        .manual_journal_persist(true)
        .open()?;
    let spaces = (Space::ALL.iter())
        .map(|space| {
            db.keyspace(space.name(), || {
                KeyspaceCreateOptions::default().max_memtable_size(8 << 20)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((db, Spaces(spaces)))
}

/// How often a refusing writer checks whether the disk takes writes again.
const RECOVERY_EVERY: Duration = Duration::from_millis(500);

/// The free space a data directory keeps on its disk by default: writes stop short of it, so
/// that the database never meets a full disk in the middle of a write (or of flushing its
/// memory tables, which takes a few times their 8 MB).
pub const DISK_RESERVE: u64 = 64 << 20;

/// Bytes free for an unprivileged writer on the disk holding `path`.
fn free_space(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is NUL-terminated and `stats` is a valid place for the answer.
    if unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs succeeded, so it filled `stats` in.
    let stats = unsafe { stats.assume_init() };
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// The record of the last commit acknowledged (`acknowledged`): rewritten in place, a fixed
/// width within one disk sector, and synced before the commit's waiters are answered, so that
/// it never trails an acknowledgement.
struct Watermark(std::fs::File);

impl Watermark {
    fn open(path: &Path) -> std::io::Result<Watermark> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map(Watermark)
    }

    fn record(&self, commit: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        self.0
            .write_all_at(format!("{commit:020}\n").as_bytes(), 0)?;
        self.0.sync_data()
    }
}

fn write_watermark(path: &Path, commit: u64) -> std::io::Result<()> {
    use std::io::Write as _;
    let temporary = path.with_extension("new");
    let mut file = std::fs::File::create(&temporary)?;
    writeln!(file, "{commit}")?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

struct Writer {
    path: PathBuf,
    later: Arc<Mutex<Vec<Op>>>,
    /// The database and its keyspaces; `None` while being reopened.
    db: Option<Database>,
    spaces: Option<Spaces>,
    /// The readers' handles, dropped and replaced with the writer's own when it reopens.
    shared_spaces: Arc<RwLock<Option<Spaces>>>,
    refusing: Arc<Mutex<Option<Arc<str>>>>,
    reserve: Arc<AtomicU64>,
    /// Whether the database failed a write, after which it refuses every write until reopened.
    poisoned: bool,
    recovered_at: Instant,
    /// The last commit written, and the last one synced.
    commit: u64,
    synced: u64,
    watermark: Watermark,
    watermarked: u64,
    watermark_at: Instant,
}

impl Writer {
    fn run(mut self, submissions: mpsc::Receiver<Submission>) {
        batch_scheduling();
        loop {
            let first = match submissions.recv_timeout(WATERMARK_EVERY) {
                Ok(first) => first,
                Err(mpsc::RecvTimeoutError::Timeout) => Submission {
                    ops: Vec::new(),
                    wait: Wait::Written,
                    done: None,
                },
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if self.refusal().is_some() && self.recovered_at.elapsed() >= RECOVERY_EVERY {
                self.recover();
            }
            let later = std::mem::take(&mut *self.later.lock().unwrap_or_else(|e| e.into_inner()));
            let idle = first.ops.is_empty() && first.done.is_none();
            if idle && later.is_empty() {
                self.sync_idle();
                continue;
            }
            let mut group = vec![
                Submission {
                    ops: later,
                    wait: Wait::Written,
                    done: None,
                },
                first,
            ];
            while group.len() < 4096 {
                match submissions.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            let result = match self.refusal() {
                Some(reason) => Err(DiskError(reason)),
                None => match self.short_of_space() {
                    Some(full) => {
                        self.refuse(&full);
                        Err(full)
                    }
                    None => self.commit_group(&mut group).inspect_err(|e| {
                        self.poisoned = true;
                        self.refuse(e);
                    }),
                },
            };
            for submission in group {
                if let Some(done) = submission.done {
                    let _ = done.send(result.clone());
                }
            }
            if idle || self.watermark_at.elapsed() >= WATERMARK_EVERY {
                self.sync_idle();
            }
        }
        let later = std::mem::take(&mut *self.later.lock().unwrap_or_else(|e| e.into_inner()));
        if !later.is_empty() && self.refusal().is_none() {
            let _ = self.commit_group(&mut [Submission {
                ops: later,
                wait: Wait::Written,
                done: None,
            }]);
        }
        self.sync_idle();
    }

    fn refusal(&self) -> Option<Arc<str>> {
        self.refusing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Refuses writes from now on, for `error`'s reason, until [`Writer::recover`] succeeds:
    /// the database refuses them itself after a failed write.
    fn refuse(&mut self, error: &DiskError) {
        tracing::error!(%error, "the data directory refuses writes until the disk takes them again");
        *self.refusing.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.0.clone());
        self.recovered_at = Instant::now();
    }

    /// Why no write should be made now: less free space than the reserve.
    fn short_of_space(&self) -> Option<DiskError> {
        let reserve = self.reserve.load(Ordering::Relaxed);
        let free = free_space(&self.path).ok()?;
        (free < reserve).then(|| {
            DiskError(
                format!(
                    "the disk holding the data directory is full: {:.1} MB free, {:.1} MB kept \
                     in reserve; writes resume once there is room",
                    free as f64 / 1e6,
                    reserve as f64 / 1e6
                )
                .into(),
            )
        })
    }

    /// Accepts writes again once there is room on the disk. A database that failed a write is
    /// reopened first, and accepted only if it holds exactly the commits acknowledged: a write
    /// that failed left nothing behind, so what the process holds in memory still matches the
    /// disk. If a failed write did reach the disk after all, the directory goes on refusing: a
    /// restart reads it afresh.
    fn recover(&mut self) {
        self.recovered_at = Instant::now();
        if self.short_of_space().is_some() {
            return;
        }
        if !self.poisoned {
            *self.refusing.lock().unwrap_or_else(|e| e.into_inner()) = None;
            tracing::info!("the data directory takes writes again");
            return;
        }
        let probe = self.path.join("space-probe");
        let room = std::fs::write(&probe, vec![0u8; 1 << 20])
            .and_then(|()| std::fs::File::open(&probe)?.sync_all());
        let _ = std::fs::remove_file(&probe);
        if room.is_err() {
            return;
        }
        // Every handle must go before the database can be opened again.
        *self
            .shared_spaces
            .write()
            .unwrap_or_else(|e| e.into_inner()) = None;
        self.spaces = None;
        self.db = None;
        let (db, spaces) = match open_database(&self.path) {
            Ok(opened) => opened,
            Err(error) => {
                tracing::warn!(%error, "the data directory could not be reopened yet");
                return;
            }
        };
        let on_disk = (spaces.get(Space::Meta).get(COMMIT_KEY).ok().flatten())
            .and_then(|v| v.to_vec().try_into().ok().map(u64::from_be_bytes));
        *self
            .shared_spaces
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(spaces.clone());
        self.spaces = Some(spaces);
        self.db = Some(db);
        let mut refusing = self.refusing.lock().unwrap_or_else(|e| e.into_inner());
        if on_disk != Some(self.commit) {
            *refusing = Some(
                "a write that failed reached the disk after all; restart rockets-local to read \
                 the data directory afresh"
                    .into(),
            );
            tracing::error!(
                on_disk,
                written = self.commit,
                "the data directory needs a restart"
            );
            return;
        }
        *refusing = None;
        self.poisoned = false;
        tracing::info!("the data directory takes writes again");
    }

    /// Syncs what was written without a sync, and records the last synced commit.
    fn sync_idle(&mut self) {
        if self.synced < self.commit && self.refusal().is_none() {
            let synced = self.database().persist(PersistMode::SyncData);
            match synced {
                Ok(()) => self.synced = self.commit,
                Err(error) => {
                    self.poisoned = true;
                    self.refuse(&DiskError(error.to_string().into()));
                }
            }
        }
        self.keep_watermark();
    }

    fn database(&self) -> &Database {
        self.db
            .as_ref()
            .expect("open unless reopening, and nothing writes while it reopens")
    }

    fn commit_group(&mut self, group: &mut [Submission]) -> Result<(), DiskError> {
        let spaces = self.spaces.as_ref().expect("open unless reopening");
        let mut batch = self.database().batch();
        for submission in group.iter_mut() {
            for op in submission.ops.drain(..) {
                match op {
                    Op::Put(space, key, value) => batch.insert(spaces.get(space), key, value),
                    Op::Delete(space, key) => batch.remove(spaces.get(space), key),
                }
            }
        }
        let sync = group.iter().any(|s| s.wait == Wait::Synced);
        let commit = self.commit + 1;
        batch.insert(
            spaces.get(Space::Meta),
            COMMIT_KEY,
            commit.to_be_bytes().to_vec(),
        );
        let failed = |e: fjall::Error| {
            DiskError(match e {
                fjall::Error::Io(io) => {
                    format!("a write to the data directory failed: {io}").into()
                }
                other => other.to_string().into(),
            })
        };
        batch.commit().map_err(failed)?;
        // A group nobody waits to see synced stays in the journal's buffer until the next sync
        // (or the quarter-second timer) flushes it: a crash before then loses a suffix of the
        // journal that acknowledged nothing, and what it undid (a store commit and the delete of
        // its records, say) is lost together.
        if sync {
            self.database()
                .persist(PersistMode::SyncData)
                .map_err(failed)?;
            // Before anyone is answered: a restart must find this commit, or refuse to start.
            // (Until it is recorded the commit does not count as made, so a failure here leaves
            // the directory refusing until a restart, which reads it afresh.)
            self.watermark.record(commit).map_err(|e| {
                DiskError(format!("recording the acknowledged commit failed: {e}").into())
            })?;
            self.watermarked = commit;
            self.synced = commit;
        }
        self.commit = commit;
        Ok(())
    }

    fn keep_watermark(&mut self) {
        if self.watermarked == self.synced || self.refusal().is_some() {
            return;
        }
        match self.watermark.record(self.synced) {
            Ok(()) => {
                self.watermarked = self.synced;
                self.watermark_at = Instant::now();
            }
            Err(error) => tracing::warn!(%error, "the acknowledged-commit record was not updated"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An empty directory of its own under the system's temporary directory.
    pub(crate) fn scratch(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "rockets-embedded-{name}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        let _ = std::fs::remove_dir_all(&path);
        path
    }

    async fn write_some(path: &Path, commits: u64) {
        let dir = DataDir::open(path).unwrap();
        for n in 0..commits {
            let key = n.to_be_bytes().to_vec();
            dir.submit(
                vec![Op::Put(Space::History, key, vec![b'x'; 200])],
                Wait::Synced,
            )
            .done()
            .await
            .unwrap();
        }
    }

    /// The newest journal, and how much of it is written (it may be allocated ahead).
    fn journal(path: &Path) -> (PathBuf, usize) {
        let mut journals: Vec<PathBuf> = std::fs::read_dir(path.join("db"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
            .collect();
        journals.sort();
        let journal = journals.pop().expect("a journal");
        let bytes = std::fs::read(&journal).unwrap();
        let used = bytes.iter().rposition(|b| *b != 0).map_or(0, |at| at + 1);
        (journal, used)
    }

    #[test]
    fn a_prefix_ends_where_its_keys_do() {
        assert_eq!(prefix_end(b"ab/"), Some(b"ab0".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[tokio::test]
    async fn what_was_synced_is_there_after_reopening() {
        let path = scratch("reopen");
        write_some(&path, 20).await;
        let dir = DataDir::open(&path).unwrap();
        assert_eq!(dir.all(Space::History).unwrap().len(), 20);
        drop(dir);
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[tokio::test]
    async fn a_second_opener_is_refused() {
        let path = scratch("in-use");
        let dir = DataDir::open(&path).unwrap();
        let again = DataDir::open(&path).err().expect("refused");
        assert!(matches!(again, DataDirError::InUse(_)), "{again}");
        assert!(again.to_string().contains("in use by another process"));
        drop(dir);
        DataDir::open(&path).expect("free again once closed");
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[tokio::test]
    async fn a_journal_cut_short_is_refused_not_served() {
        let path = scratch("cut");
        write_some(&path, 50).await;
        let (journal, used) = journal(&path);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&journal)
            .unwrap();
        file.set_len(used as u64 / 2).unwrap();
        drop(file);
        let error = DataDir::open(&path).err().expect("refused");
        assert!(matches!(error, DataDirError::Damaged { .. }), "{error}");
        assert!(error.to_string().contains("was acknowledged"), "{error}");
        std::fs::remove_dir_all(&path).unwrap();
    }

    /// As if the process were killed the moment a commit was acknowledged, and that commit's
    /// bytes then lost: a copy of the directory taken right after each acknowledgement, its
    /// journal's last bytes zeroed, is refused, never opened without the commit.
    #[tokio::test]
    async fn a_commit_lost_right_after_its_acknowledgement_is_refused() {
        let path = scratch("acknowledged");
        let dir = DataDir::open(&path).unwrap();
        for n in 0..12u64 {
            dir.submit(
                vec![Op::Put(
                    Space::History,
                    n.to_be_bytes().to_vec(),
                    vec![b'x'; 200],
                )],
                Wait::Synced,
            )
            .done()
            .await
            .unwrap();
            let copy = scratch(&format!("acknowledged-{n}"));
            for file in walk(&path) {
                let to = copy.join(file.strip_prefix(&path).unwrap());
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(&file, &to).unwrap();
            }
            let (journal, used) = journal(&copy);
            let mut bytes = std::fs::read(&journal).unwrap();
            bytes[used.saturating_sub(64)..used].fill(0);
            std::fs::write(&journal, bytes).unwrap();
            let error = DataDir::open(&copy).err().expect("refused");
            assert!(
                error.to_string().contains("was acknowledged"),
                "{n}: {error}"
            );
            std::fs::remove_dir_all(&copy).unwrap();
        }
        drop(dir);
        std::fs::remove_dir_all(&path).unwrap();
    }

    /// Every file under `path`.
    fn walk(path: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).unwrap() {
            let entry = entry.unwrap().path();
            if entry.is_dir() {
                files.extend(walk(&entry));
            } else {
                files.push(entry);
            }
        }
        files
    }

    #[tokio::test]
    async fn a_damaged_journal_is_refused() {
        let path = scratch("garbled");
        write_some(&path, 50).await;
        let (journal, used) = journal(&path);
        let mut bytes = std::fs::read(&journal).unwrap();
        let middle = used / 2;
        for byte in &mut bytes[middle..middle + 64] {
            *byte ^= 0x5a;
        }
        std::fs::write(&journal, bytes).unwrap();
        let error = DataDir::open(&path).err().expect("refused");
        assert!(matches!(error, DataDirError::Damaged { .. }), "{error}");
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[tokio::test]
    async fn a_missing_or_unreadable_acknowledgement_record_is_refused() {
        let path = scratch("record");
        write_some(&path, 3).await;
        std::fs::write(path.join(WATERMARK_FILE), "three\n").unwrap();
        let error = DataDir::open(&path).err().expect("refused");
        assert!(error.to_string().contains("not a number"), "{error}");
        std::fs::remove_file(path.join(WATERMARK_FILE)).unwrap();
        let error = DataDir::open(&path).err().expect("refused");
        assert!(error.to_string().contains(WATERMARK_FILE), "{error}");
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[tokio::test]
    async fn another_directory_is_not_taken_for_one() {
        let path = scratch("foreign");
        std::fs::create_dir_all(path.join("db")).unwrap();
        std::fs::write(path.join("db").join("version"), "something else").unwrap();
        let error = DataDir::open(&path).err().expect("refused");
        assert!(matches!(error, DataDirError::Damaged { .. }), "{error}");
        std::fs::remove_dir_all(&path).unwrap();
    }
}
