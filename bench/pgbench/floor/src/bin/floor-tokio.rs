//! See the crate docs: pgmld's runtime shape, bytes copied and nothing else.
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let (listen, upstream) = pgbench_floor::addresses();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(&listen).await.expect("bind --listen");
        loop {
            let Ok((client, _)) = listener.accept().await else { continue };
            let Ok(server) = TcpStream::connect(&upstream).await else { continue };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(copy(cr, sw));
            tokio::spawn(copy(sr, cw));
        }
    });
}

/// pgmld's relay loop without its protocol work: read what is there into one 64 KiB
/// buffer, write it all, repeat (rather than `tokio::io::copy`, whose 8 KiB buffer and
/// flushes pgmld does not have).
async fn copy(mut from: impl AsyncReadExt + Unpin, mut to: impl AsyncWriteExt + Unpin) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        match from.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        if to.write_all(&buf).await.is_err() {
            return;
        }
    }
}
