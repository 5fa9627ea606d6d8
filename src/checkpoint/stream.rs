//! A committed step's tensors handed over one at a time as they are read.
//!
//! A reader thread fetches and verifies the step's files (see
//! [`super::read::stream_step`]) and passes each tensor on through a short
//! channel, so the host holds about one file rather than the whole step, and
//! the next file downloads while the consumer uploads this one's tensors to
//! the devices.

use super::read::stream_step;
use super::write::WriteOptions;
use super::{CheckpointError, Manifest};
use crate::host::HostTensor;
use crate::storage::{self, Location};
use std::sync::mpsc::{sync_channel, Receiver};

/// Tensors the reader may run ahead of the consumer.
const TENSORS_AHEAD: usize = 2;

enum Message {
    Tensor(String, HostTensor),
    Done,
    Failed(CheckpointError),
}

/// The tensors of one committed step in file order, each once, after its
/// file was checked against the manifest. A later file can still fail (an
/// `Err` item): only a stream that ran to its end without one is a whole
/// checkpoint. Dropping it early stops the reader at its next tensor.
pub struct TensorStream {
    messages: Receiver<Message>,
    ended: bool,
}

impl TensorStream {
    pub(crate) fn start(run: &Location, manifest: &Manifest, options: &WriteOptions) -> TensorStream {
        let (sender, messages) = sync_channel(TENSORS_AHEAD);
        let (run, manifest, options) = (run.clone(), manifest.clone(), options.clone());
        std::thread::spawn(move || {
            let mut put = |name, tensor| {
                sender.send(Message::Tensor(name, tensor)).map_err(|_| CheckpointError::Invalid("the restore stopped taking tensors".into()))
            };
            let last = match storage::block_on(stream_step(&run, &manifest, &options, &mut put)) {
                Ok(()) => Message::Done,
                Err(e) => Message::Failed(e),
            };
            // Nobody listens any more when the consumer gave up first.
            let _ = sender.send(last);
        });
        TensorStream { messages, ended: false }
    }
}

impl Iterator for TensorStream {
    type Item = Result<(String, HostTensor), CheckpointError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let message = self.messages.recv().unwrap_or_else(|_| Message::Failed(CheckpointError::Invalid("the checkpoint reader ended before the last tensor".into())));
        match message {
            Message::Tensor(name, tensor) => Some(Ok((name, tensor))),
            Message::Done => {
                self.ended = true;
                None
            }
            Message::Failed(e) => {
                self.ended = true;
                Some(Err(e))
            }
        }
    }
}
