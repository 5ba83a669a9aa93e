//! The TCP side: managers connect, prove they belong to this endpoint, register, and
//! exchange frames with the interchange.
//!
//! The endpoint speaks first: [`ToManager::Hello`] with a fresh nonce. A manager
//! answers with its registration and an HMAC of the nonce under the endpoint's secret
//! (`ferry_proto::frames::registration_proof`); one that cannot is told why and
//! disconnected before it sees a task.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_proto::frames::{FromManager, ManagerInfo, ToManager, proof_holds};
use futures_util::{SinkExt, StreamExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::interchange::Input;

/// How long a new connection has to register.
const REGISTER_WITHIN: Duration = Duration::from_secs(15);

/// The largest frame a connection may send before it has proved the secret (a
/// registration is well under 1 KiB): a stranger cannot make the endpoint hold more.
const REGISTRATION_FRAME_BYTES: usize = 64 * 1024;

/// Connections that have not registered yet, at most; past that, new ones are closed
/// at once (managers that proved the secret are not counted).
const GREETING_AT_ONCE: usize = 256;

fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_frame)
        .new_codec()
}

/// Accepts manager connections until the listener fails.
pub async fn accept(listener: TcpListener, secret: Arc<[u8]>, inputs: mpsc::UnboundedSender<Input>) {
    let greeting = Arc::new(tokio::sync::Semaphore::new(GREETING_AT_ONCE));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(permit) = greeting.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "closing a connection: {GREETING_AT_ONCE} others have not registered yet");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, peer, secret.clone(), inputs.clone(), permit));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot accept manager connections");
                return;
            }
        }
    }
}

/// The two halves of a manager's connection, framed.
pub type Frames = FramedRead<OwnedReadHalf, LengthDelimitedCodec>;
pub type Writer = FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>;

/// Greets a new connection and checks its registration: the manager's facts and its
/// connection, or why it was turned away (it is told too, when it proved nothing).
/// Until it has proved the secret a connection may send frames of
/// [`REGISTRATION_FRAME_BYTES`] at most; after, of the codec's limit.
pub async fn greet(stream: TcpStream, secret: &[u8]) -> Result<(ManagerInfo, Frames, Writer), String> {
    let (rd, wr) = stream.into_split();
    let mut frames = FramedRead::new(rd, codec(REGISTRATION_FRAME_BYTES));
    let mut writer = FramedWrite::new(wr, codec(ferry_proto::codec::MAX_MESSAGE_BYTES));
    let nonce: [u8; 32] = rand::random();
    let send = |m: &ToManager| ferry_proto::codec::encode(m).map(Bytes::from);
    let hello = send(&ToManager::Hello {
        nonce: nonce.to_vec(),
    })
    .map_err(|e| e.to_string())?;
    writer
        .send(hello)
        .await
        .map_err(|e| format!("cannot greet: {e}"))?;
    let first = match tokio::time::timeout(REGISTER_WITHIN, frames.next()).await {
        Ok(Some(Ok(frame))) => ferry_proto::codec::decode::<FromManager>(&frame),
        Ok(Some(Err(e))) => return Err(format!("connection error: {e}")),
        Ok(None) => return Err("closed before registering".to_owned()),
        Err(_) => return Err(format!("did not register within {REGISTER_WITHIN:?}")),
    };
    match first {
        Ok(FromManager::Register { info, proof }) if proof_holds(secret, &nonce, info.manager_id, &proof) => {
            frames
                .decoder_mut()
                .set_max_frame_length(ferry_proto::codec::MAX_MESSAGE_BYTES);
            Ok((info, frames, writer))
        }
        Ok(FromManager::Register { info, .. }) => {
            let reason = "its secret is not this endpoint's (FERRY_MANAGER_SECRET)".to_owned();
            if let Ok(frame) = send(&ToManager::Refused {
                reason: reason.clone(),
            }) {
                let _ = writer.send(frame).await;
            }
            Err(format!(
                "manager {} on {} refused: {reason}",
                info.manager_id, info.hostname
            ))
        }
        Ok(_) => Err("a manager must register first".to_owned()),
        Err(e) => Err(format!("malformed manager frame: {e}")),
    }
}

async fn serve(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    secret: Arc<[u8]>,
    inputs: mpsc::UnboundedSender<Input>,
    greeting: tokio::sync::OwnedSemaphorePermit,
) {
    let greeted = greet(stream, &secret).await;
    drop(greeting);
    let (info, mut frames, mut writer) = match greeted {
        Ok(greeted) => greeted,
        Err(why) => {
            tracing::warn!(%peer, "closing a manager connection: {why}");
            return;
        }
    };
    let manager = info.manager_id;
    let (tx, mut rx) = mpsc::unbounded_channel::<ToManager>();
    if inputs.send(Input::ManagerConnected { info, tx }).is_err() {
        return;
    }
    let writer_task = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            let Ok(bytes) = ferry_proto::codec::encode(&message) else {
                continue;
            };
            if writer.send(Bytes::from(bytes)).await.is_err() {
                break;
            }
        }
    });
    let reason = loop {
        match frames.next().await {
            None => break "connection closed".to_owned(),
            Some(Err(e)) => break format!("connection error: {e}"),
            Some(Ok(frame)) => match ferry_proto::codec::decode::<FromManager>(&frame) {
                Ok(message) => {
                    if inputs.send(Input::FromManager { manager, message }).is_err() {
                        return;
                    }
                }
                Err(e) => break format!("malformed frame: {e}"),
            },
        }
    };
    writer_task.abort();
    let _ = inputs.send(Input::ManagerGone { manager, reason });
}
