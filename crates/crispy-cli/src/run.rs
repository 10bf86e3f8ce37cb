//! `crispy run`.

use std::sync::Arc;

use anyhow::{Context, Result};
use crispy_pipeline::{ChunkReport, FileRun, Observer, SourceStarted, run_file};
use crispy_sink::ObjectStoreSink;
use indicatif::ProgressBar;

use crate::cli::RunArgs;
use crate::logging::style_bar;

pub fn run(args: RunArgs, bar: ProgressBar) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let sink = ObjectStoreSink::from_url(&args.sink)?;
        sink.preflight().await?;
        let job = FileRun {
            path: args.source,
            source_id: args.source_id,
            chunk: args.chunk,
            max_in_flight: usize::from(args.max_in_flight),
        };
        let observer = Arc::new(BarObserver(bar.clone()));
        let result = run_file(job, Arc::new(sink), observer).await;
        bar.finish_and_clear();
        let summary = result?;
        if !bar.is_hidden() {
            eprintln!(
                "stored {} chunks ({} frames, {:.1} MB) in {:.2} s: {:.0} frames/s",
                summary.chunks,
                summary.frames,
                summary.bytes as f64 / 1e6,
                summary.wall.as_secs_f64(),
                summary.frames_per_second()
            );
        }
        Ok(())
    })
}

/// Drives the progress bar from pipeline events.
struct BarObserver(ProgressBar);

impl Observer for BarObserver {
    fn started(&self, event: &SourceStarted) {
        style_bar(&self.0, event.duration_ms.unwrap_or(0));
        self.0.set_message(event.source_id.to_string());
    }
    fn progress(&self, media_ms: u64) {
        self.0.set_position(media_ms);
    }
    fn chunk_stored(&self, report: &ChunkReport) {
        self.0.set_message(format!(
            "{} chunk {}",
            report.metadata.source_id, report.metadata.sequence
        ));
    }
}
