// SPDX-License-Identifier: GPL-2.0

//! Where the cache data path runs: a volume's workqueue (requests that wait for I/O) and the
//! destager's kernel thread.

use core::ffi::{c_int, c_void};
use core::ptr::NonNull;

use kernel::bindings;
use kernel::error::from_err_ptr;
use kernel::prelude::*;
use kernel::sync::Arc;

use super::ffi;

/// An unbound, reclaim-safe workqueue (`WQ_MEM_RECLAIM`: it has a rescuer, so requests make
/// progress under memory pressure).
///
/// # Invariants
///
/// `wq` was returned by `alloc_workqueue` and is destroyed only in `drop`.
pub(crate) struct WorkQueue {
    wq: NonNull<bindings::workqueue_struct>,
}

// SAFETY: a workqueue may be used and destroyed from any thread.
unsafe impl Send for WorkQueue {}
// SAFETY: queueing work is thread-safe.
unsafe impl Sync for WorkQueue {}

impl WorkQueue {
    /// A new workqueue named `name` running at most `max_active` items at once.
    pub(crate) fn new(name: &CStr, max_active: i32) -> Result<Self> {
        // SAFETY: `name` is a valid C string; the workqueue copies it.
        let wq = unsafe { ffi::pf_alloc_wq(name.as_char_ptr(), max_active) };
        Ok(Self { wq: NonNull::new(wq).ok_or(ENOMEM)? })
    }

    pub(crate) fn raw(&self) -> *mut bindings::workqueue_struct {
        self.wq.as_ptr()
    }
}

impl Drop for WorkQueue {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the workqueue is live; `destroy_workqueue` drains it.
        unsafe { bindings::destroy_workqueue(self.wq.as_ptr()) };
    }
}

struct Start<T> {
    data: Arc<T>,
    body: fn(&T),
}

/// `threadfn` of a [`Thread`].
///
/// # Safety
///
/// `arg` is the `Start<T>` owned by the `Thread` that created this kernel thread; it lives until
/// `kthread_stop` has returned, i.e. past this function.
unsafe extern "C" fn thread_fn<T: Send + Sync>(arg: *mut c_void) -> c_int {
    // SAFETY: see the function's safety section.
    let start = unsafe { &*(arg as *const Start<T>) };
    let noio = NoIo::enter();
    (start.body)(&start.data);
    drop(noio);
    // `kthread_stop` waits for the body to return; a body that returned early waits here.
    while !should_stop() {
        // SAFETY: sleeping in a kernel thread; `kthread_stop` wakes it.
        unsafe { bindings::schedule_timeout_interruptible(100) };
    }
    0
}

/// A kernel thread running `body(&data)` until [`should_stop`]; dropping it stops it and waits.
///
/// # Invariants
///
/// `task` was created by `kthread_run` with `start` as its argument, holds a task reference
/// taken at creation, and is stopped in `drop`.
pub(crate) struct Thread<T: Send + Sync + 'static> {
    task: NonNull<bindings::task_struct>,
    start: KBox<Start<T>>,
}

// SAFETY: the task handle may be stopped from any thread; `T` is `Send + Sync`.
unsafe impl<T: Send + Sync> Send for Thread<T> {}
// SAFETY: as above, `&Thread` offers nothing but `Drop`.
unsafe impl<T: Send + Sync> Sync for Thread<T> {}

impl<T: Send + Sync + 'static> Thread<T> {
    /// Starts `body(&data)` in a kernel thread named `name`.
    pub(crate) fn spawn(name: &CStr, data: Arc<T>, body: fn(&T)) -> Result<Self> {
        let start = KBox::new(Start { data, body }, GFP_KERNEL)?;
        let arg = (&*start as *const Start<T>).cast_mut().cast::<c_void>();
        // SAFETY: `thread_fn::<T>` receives `arg`, which `start` keeps alive until after
        // `kthread_stop` (in `drop`); `name` is a valid C string.
        let task = from_err_ptr(unsafe { ffi::pf_kthread_run(thread_fn::<T>, arg, name.as_char_ptr()) })?;
        Ok(Self { task: NonNull::new(task).ok_or(ENOMEM)?, start })
    }
}

impl<T: Send + Sync + 'static> Drop for Thread<T> {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the thread was started and not stopped; the helper took
        // a reference on its task, which `kthread_stop_put` drops after the thread has exited.
        unsafe { bindings::kthread_stop_put(self.task.as_ptr()) };
        let _ = &self.start;
    }
}

/// Whether the current kernel thread was asked to stop.
pub(crate) fn should_stop() -> bool {
    // SAFETY: callable from any kernel thread.
    unsafe { bindings::kthread_should_stop() }
}

/// Sleeps `ms` milliseconds, or less when the thread is woken (e.g. by `kthread_stop`).
pub(crate) fn nap(ms: u32) {
    // SAFETY: sleeping in process context; no lock of ours is held by the callers.
    unsafe { bindings::msleep_interruptible(ms) };
}

/// A `memalloc_noio` scope: allocations of the current task do no I/O until it is dropped.
pub(crate) struct NoIo(u32, core::marker::PhantomData<*const ()>);

impl NoIo {
    /// Enters the scope.
    pub(crate) fn enter() -> Self {
        // SAFETY: only changes the current task's allocation flags; restored in `drop`.
        Self(unsafe { ffi::pf_memalloc_noio_save() }, core::marker::PhantomData)
    }
}

impl Drop for NoIo {
    fn drop(&mut self) {
        // SAFETY: restores what `enter` saved, on the same task (the guard is not `Send`).
        unsafe { ffi::pf_memalloc_noio_restore(self.0) };
    }
}
