//! Finding the files to tail: a glob rescan is the source of truth, `notify` events only wake the
//! tailer sooner.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tracing::{debug, info, warn};

/// Wakes the tailer's wait early (a file changed, or shutdown began). Wake-ups coalesce.
#[derive(Debug, Clone)]
pub struct Waker(SyncSender<()>);

impl Waker {
    pub fn wake(&self) {
        match self.0.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }
}

/// A channel of wake-ups: the tailer waits on the receiver.
pub fn wake_channel() -> (Waker, Receiver<()>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    (Waker(tx), rx)
}

/// Most changed paths remembered between two passes; beyond it, every file is looked at.
const MAX_HINTS: usize = 4096;

/// Paths that changed since the last pass, from `notify` events.
#[derive(Debug, Default)]
pub struct Hints {
    pub paths: HashSet<PathBuf>,
    /// Too many to remember: look at every file.
    pub overflow: bool,
}

pub struct Discovery {
    pattern: String,
    matcher: Option<glob::Pattern>,
    hints: Arc<Mutex<Hints>>,
    base: PathBuf,
    recursive: bool,
    waker: Waker,
    watcher: Option<RecommendedWatcher>,
    watch_failed: bool,
}

impl Discovery {
    pub fn new(pattern: &str, waker: Waker) -> Self {
        let (base, recursive) = watch_base(pattern);
        Self {
            pattern: pattern.to_owned(),
            matcher: glob::Pattern::new(pattern).ok(),
            hints: Arc::default(),
            base,
            recursive,
            waker,
            watcher: None,
            watch_failed: false,
        }
    }

    /// Sets up the `notify` watch if it is not up yet (its directory may appear later). Failure
    /// is logged once; polling by rescan keeps working without it.
    pub fn ensure_watch(&mut self) {
        if self.watcher.is_some() {
            return;
        }
        let waker = self.waker.clone();
        let hints = self.hints.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else {
                return;
            };
            if !matches!(
                event.kind,
                EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
            ) {
                return;
            }
            {
                let mut hints = hints.lock().unwrap_or_else(|p| p.into_inner());
                for path in event.paths {
                    if hints.paths.len() >= MAX_HINTS {
                        hints.overflow = true;
                        break;
                    }
                    hints.paths.insert(path);
                }
            }
            waker.wake();
        };
        let mode = if self.recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        let result = notify::recommended_watcher(handler)
            .and_then(|mut w| w.watch(&self.base, mode).map(|()| w));
        match result {
            Ok(watcher) => {
                if self.watch_failed {
                    info!(dir = %self.base.display(), "file change notifications are up");
                }
                debug!(dir = %self.base.display(), recursive = self.recursive, "watching for changes");
                self.watcher = Some(watcher);
                self.watch_failed = false;
            }
            Err(e) => {
                if !self.watch_failed {
                    warn!(dir = %self.base.display(), error = %e,
                        "file change notifications unavailable; relying on periodic rescans");
                }
                self.watch_failed = true;
            }
        }
    }

    /// The paths changed since the last call.
    pub fn take_hints(&self) -> Hints {
        std::mem::take(&mut *self.hints.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether `path` matches the glob (a changed path that is not tracked yet is a new file).
    pub fn matches(&self, path: &Path) -> bool {
        self.matcher.as_ref().is_some_and(|m| m.matches_path(path))
    }

    /// Paths matching the glob now. Unreadable directories are skipped.
    pub fn scan(&self) -> Vec<PathBuf> {
        match glob::glob(&self.pattern) {
            Ok(paths) => paths
                .filter_map(|p| match p {
                    Ok(p) => Some(p),
                    Err(e) => {
                        debug!(error = %e, "glob entry skipped");
                        None
                    }
                })
                .collect(),
            Err(e) => {
                warn!(pattern = %self.pattern, error = %e, "invalid glob pattern");
                Vec::new()
            }
        }
    }
}

/// The directory to watch for `pattern`: its longest prefix without glob characters, and whether
/// matches can lie below it in sub-directories.
pub fn watch_base(pattern: &str) -> (PathBuf, bool) {
    let mut base = PathBuf::new();
    let mut rest = 0usize;
    for component in Path::new(pattern).components() {
        let is_glob = matches!(component, Component::Normal(s)
            if s.to_string_lossy().contains(['*', '?', '[']));
        if rest > 0 || is_glob {
            rest += 1;
        } else {
            base.push(component);
        }
    }
    if rest == 0 {
        // A literal path: watch its directory.
        base.pop();
        rest = 1;
    }
    if base.as_os_str().is_empty() {
        base.push(".");
    }
    (base, rest > 1 || pattern.contains("**"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_base_is_the_literal_prefix() {
        assert_eq!(
            watch_base("./hotdata/*.jsonl"),
            (PathBuf::from("./hotdata"), false)
        );
        assert_eq!(
            watch_base("/var/log/*/app.jsonl"),
            (PathBuf::from("/var/log"), true)
        );
        assert_eq!(watch_base("*.jsonl"), (PathBuf::from("."), false));
        assert_eq!(watch_base("/data/a.jsonl"), (PathBuf::from("/data"), false));
        assert_eq!(
            watch_base("/data/**/*.jsonl"),
            (PathBuf::from("/data"), true)
        );
    }
}
