//! The TCP side: managers connect, register, and exchange frames with the interchange.

use bytes::Bytes;
use ferry_proto::frames::{FromManager, ToManager};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::interchange::Input;

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(ferry_proto::codec::MAX_MESSAGE_BYTES)
        .new_codec()
}

/// Accepts manager connections until the listener fails.
pub async fn accept(listener: TcpListener, inputs: mpsc::UnboundedSender<Input>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, peer, inputs.clone()));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot accept manager connections");
                return;
            }
        }
    }
}

async fn serve(stream: TcpStream, peer: std::net::SocketAddr, inputs: mpsc::UnboundedSender<Input>) {
    let (rd, wr) = stream.into_split();
    let mut frames = FramedRead::new(rd, codec());
    let mut writer = FramedWrite::new(wr, codec());
    let info = match frames.next().await {
        Some(Ok(frame)) => match ferry_proto::codec::decode::<FromManager>(&frame) {
            Ok(FromManager::Register(info)) => info,
            Ok(_) => {
                tracing::warn!(%peer, "a manager must register first; closing");
                return;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "malformed manager frame; closing");
                return;
            }
        },
        _ => return,
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
