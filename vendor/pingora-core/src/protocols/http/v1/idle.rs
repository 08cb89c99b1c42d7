// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! Idle HTTP/1 server connections, oldest first, so that a server out of connections can
//! close the one idle the longest to make room.
//!
//! A connection is idle while its session waits for the first byte of a request with
//! nothing of it read: a new connection before its first request, a kept-alive one between
//! requests. nginx does the same with its keep-alive connections when it runs out of
//! `worker_connections`: without it, connections that send nothing (idle keep-alives, or
//! a flood of silent connections) fill a connection limit and lock every real client out
//! until their idle timeouts run.
//!
//! A session enters the registry only once its first read would block (a request already
//! in the socket costs nothing) and leaves it when a byte arrives or the wait ends; each
//! costs one short lock of a mutex, and no allocation once the registry has grown to the
//! number of connections idle at once. [`IdleConnections::evict_oldest`] wakes the oldest
//! waiter, whose `read_request` then returns `Ok(None)`, as on a keep-alive timeout, and the
//! connection is closed.

use parking_lot::Mutex;
use std::future::Future;
use std::pin::pin;
use std::task::{Poll, Waker};

/// No slot (the end of a list).
const NIL: u32 = u32::MAX;

/// The idle HTTP/1 connections of one or more services, in the order they became idle.
///
/// Set it in [`HttpServerOptions::h1_idle_connections`](crate::apps::HttpServerOptions) and
/// call [`Self::evict_oldest`] when a connection must make room (for example a new one at a
/// connection limit).
#[derive(Debug)]
pub struct IdleConnections {
    list: Mutex<List>,
}

impl Default for IdleConnections {
    fn default() -> Self {
        Self::new()
    }
}

impl IdleConnections {
    pub fn new() -> Self {
        IdleConnections {
            list: Mutex::new(List {
                slots: Vec::new(),
                head: NIL,
                tail: NIL,
                free: NIL,
                len: 0,
            }),
        }
    }

    /// Signal the connection idle the longest to close; `false` when none is idle. The
    /// connection closes once its task runs (its session's `read_request` returns
    /// `Ok(None)`); a request byte that arrived meanwhile is served instead.
    pub fn evict_oldest(&self) -> bool {
        let waker = self.list.lock().pop_oldest();
        match waker {
            Some(waker) => {
                waker.wake();
                true
            }
            None => false,
        }
    }

    /// How many connections are idle now.
    pub fn len(&self) -> usize {
        self.list.lock().len
    }

    /// Whether no connection is idle now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Await `read`, the wait for a request's first byte, unless this registry evicts the
    /// connection first: then `None`. The connection enters the registry only if `read` is
    /// pending, and leaves it when `read` completes or this future is dropped. HTTP/1
    /// sessions do this themselves; an application can make its own idle waits evictable.
    pub async fn read_unless_evicted<F: Future>(&self, read: F) -> Option<F::Output> {
        let mut read = pin!(read);
        let mut entry = Entry {
            idle: self,
            key: None,
        };
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = read.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if entry.evicted(cx.waker()) {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// A waiting session's place in the registry; it leaves on drop.
struct Entry<'a> {
    idle: &'a IdleConnections,
    key: Option<u32>,
}

impl Entry<'_> {
    /// Enter the registry at the first call; later, whether the connection was evicted (and
    /// keep the waker current, for a task that moved).
    fn evicted(&mut self, waker: &Waker) -> bool {
        let mut list = self.idle.list.lock();
        match self.key {
            None => {
                self.key = list.push_newest(waker);
                false
            }
            Some(key) => {
                if list.take_evicted(key, waker) {
                    self.key = None;
                    true
                } else {
                    false
                }
            }
        }
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.idle.list.lock().remove(key);
        }
    }
}

/// A doubly linked list of idle sessions (oldest at `head`) in a slab of slots, with a
/// free list through `next`: entering and leaving are O(1) and allocate nothing once the
/// slab has grown.
#[derive(Debug)]
struct List {
    slots: Vec<Slot>,
    head: u32,
    tail: u32,
    free: u32,
    /// Idle sessions now (in the list).
    len: usize,
}

#[derive(Debug)]
struct Slot {
    prev: u32,
    next: u32,
    state: State,
}

#[derive(Debug)]
enum State {
    /// On the free list.
    Free,
    /// In the list, with the waiting task.
    Idle(Waker),
    /// Taken off the list by an eviction; freed when its session sees it (or leaves).
    Evicted,
}

impl List {
    /// Add a session as the newest; `None` if the slab is full (the session is then never
    /// evicted).
    fn push_newest(&mut self, waker: &Waker) -> Option<u32> {
        let key = if self.free != NIL {
            let key = self.free;
            self.free = self.slots[key as usize].next;
            key
        } else {
            let key = u32::try_from(self.slots.len()).ok().filter(|&k| k != NIL)?;
            self.slots.push(Slot {
                prev: NIL,
                next: NIL,
                state: State::Free,
            });
            key
        };
        let slot = &mut self.slots[key as usize];
        slot.prev = self.tail;
        slot.next = NIL;
        slot.state = State::Idle(waker.clone());
        if self.tail == NIL {
            self.head = key;
        } else {
            self.slots[self.tail as usize].next = key;
        }
        self.tail = key;
        self.len += 1;
        Some(key)
    }

    /// Take the oldest session off the list, marked evicted; its waker.
    fn pop_oldest(&mut self) -> Option<Waker> {
        if self.head == NIL {
            return None;
        }
        let key = self.head;
        self.unlink(key);
        match std::mem::replace(&mut self.slots[key as usize].state, State::Evicted) {
            State::Idle(waker) => Some(waker),
            // Only idle sessions are linked.
            State::Free | State::Evicted => None,
        }
    }

    /// Whether the session at `key` was evicted (its slot is then freed); otherwise keep
    /// its waker current.
    fn take_evicted(&mut self, key: u32, waker: &Waker) -> bool {
        match &mut self.slots[key as usize].state {
            State::Evicted => {
                self.release(key);
                true
            }
            State::Idle(current) => {
                if !current.will_wake(waker) {
                    current.clone_from(waker);
                }
                false
            }
            State::Free => false,
        }
    }

    /// The session at `key` leaves (idle or evicted).
    fn remove(&mut self, key: u32) {
        match self.slots[key as usize].state {
            State::Idle(_) => {
                self.unlink(key);
                self.release(key);
            }
            State::Evicted => self.release(key),
            State::Free => {}
        }
    }

    fn unlink(&mut self, key: u32) {
        let (prev, next) = {
            let slot = &self.slots[key as usize];
            (slot.prev, slot.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
        self.len -= 1;
    }

    fn release(&mut self, key: u32) {
        let slot = &mut self.slots[key as usize];
        slot.state = State::Free;
        slot.prev = NIL;
        slot.next = self.free;
        self.free = key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    /// A waker that counts its wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Waker, Arc<Count>) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (Waker::from(count.clone()), count)
    }

    fn keys_oldest_first(list: &List) -> Vec<u32> {
        let mut keys = Vec::new();
        let mut key = list.head;
        while key != NIL {
            keys.push(key);
            key = list.slots[key as usize].next;
        }
        keys
    }

    #[test]
    fn evicts_oldest_first_and_skips_those_that_left() {
        let idle = IdleConnections::new();
        let wakers: Vec<_> = (0..4).map(|_| waker()).collect();
        let keys: Vec<u32> = {
            let mut list = idle.list.lock();
            wakers
                .iter()
                .map(|(w, _)| list.push_newest(w).unwrap())
                .collect()
        };
        assert_eq!(idle.len(), 4);
        // The second oldest gets a request byte and leaves.
        idle.list.lock().remove(keys[1]);
        assert_eq!(
            keys_oldest_first(&idle.list.lock()),
            [keys[0], keys[2], keys[3]]
        );

        assert!(idle.evict_oldest());
        assert_eq!(wakers[0].1 .0.load(Ordering::SeqCst), 1);
        assert!(idle.evict_oldest());
        assert_eq!(wakers[1].1 .0.load(Ordering::SeqCst), 0, "it left");
        assert_eq!(wakers[2].1 .0.load(Ordering::SeqCst), 1);
        assert_eq!(idle.len(), 1);

        // The evicted see it once, and their slots are reused.
        let (w, _) = waker();
        assert!(idle.list.lock().take_evicted(keys[0], &w));
        assert!(idle.list.lock().take_evicted(keys[2], &w));
        let again = idle.list.lock().push_newest(&w).unwrap();
        assert!(again == keys[0] || again == keys[2]);
        assert_eq!(idle.list.lock().slots.len(), 4, "no new slot");
        assert_eq!(keys_oldest_first(&idle.list.lock()), [keys[3], again]);

        assert!(idle.evict_oldest());
        assert_eq!(wakers[3].1 .0.load(Ordering::SeqCst), 1);
        assert!(idle.evict_oldest());
        assert!(!idle.evict_oldest(), "none left");
        assert!(idle.is_empty());
    }

    #[test]
    fn a_removed_newest_or_only_entry_leaves_the_list_consistent() {
        let idle = IdleConnections::new();
        let (w, count) = waker();
        let mut list = idle.list.lock();
        let a = list.push_newest(&w).unwrap();
        list.remove(a);
        assert_eq!((list.head, list.tail, list.len), (NIL, NIL, 0));
        let a = list.push_newest(&w).unwrap();
        let b = list.push_newest(&w).unwrap();
        list.remove(b);
        assert_eq!(keys_oldest_first(&list), [a]);
        assert_eq!(list.tail, a);
        let c = list.push_newest(&w).unwrap();
        assert_eq!(keys_oldest_first(&list), [a, c]);
        // An evicted entry that leaves without looking is freed too.
        let waker = list.pop_oldest().unwrap();
        waker.wake();
        list.remove(a);
        assert_eq!(keys_oldest_first(&list), [c]);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_pending_read_waits_in_the_registry_until_evicted() {
        let idle = Arc::new(IdleConnections::new());
        // A read that is ready at once never enters.
        assert_eq!(idle.read_unless_evicted(async { 7 }).await, Some(7));
        assert!(idle.is_empty());

        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let first = tokio::spawn({
            let idle = idle.clone();
            async move { idle.read_unless_evicted(std::future::pending::<()>()).await }
        });
        while idle.len() < 1 {
            tokio::task::yield_now().await;
        }
        let second = tokio::spawn({
            let idle = idle.clone();
            async move { idle.read_unless_evicted(rx).await }
        });
        while idle.len() < 2 {
            tokio::task::yield_now().await;
        }
        assert!(idle.evict_oldest());
        assert_eq!(first.await.unwrap(), None);
        tx.send(1).unwrap();
        assert_eq!(second.await.unwrap(), Some(Ok(1)));
        assert!(idle.is_empty());
        assert!(!idle.evict_oldest());
    }
}
