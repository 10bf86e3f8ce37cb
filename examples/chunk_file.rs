//! Chunk a video file into an in-memory object store and print each manifest.
//!
//! ```sh
//! cargo run --example chunk_file -- path/to/video.mp4 [chunk-duration]
//! ```

use std::sync::Arc;

use crispy_streamer::pipeline::{FileRun, NoopObserver, run_file};
use crispy_streamer::sink::ObjectStoreSink;
use object_store::ObjectStoreExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: chunk_file <video> [3s]"))?;
    let mut job = FileRun::new(path);
    if let Some(d) = args.next() {
        job.chunk = d.parse()?;
    }

    let sink = Arc::new(ObjectStoreSink::from_url("memory://demo/footage")?);
    let summary = run_file(job, Arc::clone(&sink), Arc::new(NoopObserver)).await?;
    println!(
        "{} chunks, {} frames, {:.0} frames/s",
        summary.chunks,
        summary.frames,
        summary.frames_per_second()
    );

    // List what was stored and print the manifests.
    let store = sink.store();
    let mut listing = futures::TryStreamExt::try_collect::<Vec<_>>(store.list(None)).await?;
    listing.sort_by(|a, b| a.location.cmp(&b.location));
    for meta in listing
        .iter()
        .filter(|m| m.location.as_ref().ends_with(".json"))
    {
        let body = store.get(&meta.location).await?.bytes().await?;
        println!("{}:\n{}", meta.location, String::from_utf8_lossy(&body));
    }
    Ok(())
}
