// SPDX-License-Identifier: GPL-2.0

//! The control interface's handle of this host's peer side: the node and the listener that
//! may run for it. The listener's threads hold the node too; dropping the handle (module
//! unload) stops the listener, which ends that cycle.

use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

use super::listener::Listener;
use super::node::{Node, SharedNode};
use crate::pfcore::hosts::Endpoint;

/// See the module documentation.
pub(crate) struct PeerHost {
    pub(crate) node: SharedNode,
    /// The listener while one runs, and the address it listens on. Taken by configfs to start
    /// or stop it; a listener is stopped after it left this slot (stopping waits for threads).
    listener: Pin<KBox<Mutex<Option<(Endpoint, Listener)>>>>,
}

impl PeerHost {
    pub(crate) fn new() -> Result<PeerHost> {
        Ok(PeerHost {
            node: Arc::pin_init(Node::new(), GFP_KERNEL)?,
            listener: KBox::pin_init(new_mutex!(None), GFP_KERNEL)?,
        })
    }

    /// Where the listener listens, if one runs.
    pub(crate) fn listening(&self) -> Option<Endpoint> {
        self.listener.lock().as_ref().map(|(e, _)| *e)
    }

    /// Starts (or, with `None`, stops) the listener.
    pub(crate) fn set_listen(&self, at: Option<Endpoint>) -> Result {
        let old = self.listener.lock().take();
        // Stopped outside the lock: it waits for threads.
        drop(old);
        if let Some(at) = at {
            let l = Listener::start(self.node.clone(), at)?;
            // Two writers racing: the last one's listener stays; the other is stopped here,
            // outside the lock.
            let raced = self.listener.lock().replace((at, l));
            drop(raced);
        }
        Ok(())
    }
}

impl Drop for PeerHost {
    fn drop(&mut self) {
        let l = self.listener.lock().take();
        drop(l);
    }
}
