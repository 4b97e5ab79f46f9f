//! `resedge camera MODEL`: live classification. A capture thread reads the [`FrameSource`]; the main thread
//! decodes, preprocesses, infers and prints top-k with per-stage latency and a rolling FPS.
//!
//! Live sources (V4L2, MJPEG on stdin) keep only the newest frame: when inference is slower than the camera,
//! older frames are dropped (and counted) instead of queueing, so results stay current. A directory is
//! processed frame by frame. Ctrl-C stops cleanly with a summary. A lost source (stream cut mid-frame, camera
//! gone, no frame for `--frame-timeout`) or a corrupt frame is reported and, with `--reconnect`, skipped or
//! reopened; otherwise the command exits with [`EXIT_SOURCE_FAILED`].

mod dir;
mod mjpeg;
mod source;
mod v4l2;

use crate::predict::{ms, with_classifier, Class};
use anyhow::{bail, Context, Result};
use clap::Args;
use source::{Frame, FrameSource, SourceError};
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Exit status when the source was lost or delivered a corrupt frame (without `--reconnect`).
pub const EXIT_SOURCE_FAILED: u8 = 3;

#[derive(Args, Debug)]
pub struct CameraArgs {
    /// Model file (.rsm) with preprocessing metadata.
    pub model: PathBuf,
    /// V4L2 camera device (the default source; needs a build with `--features camera`).
    #[arg(long, group = "source")]
    pub device: Option<PathBuf>,
    /// Read an MJPEG stream (concatenated JPEGs) from stdin, e.g. `ffmpeg -f v4l2 -i /dev/video0 -f mjpeg -`.
    #[arg(long, group = "source")]
    pub stdin_mjpeg: bool,
    /// Classify every image in a directory, in name order.
    #[arg(long, group = "source")]
    pub dir: Option<PathBuf>,
    /// Capture size WxH requested from the camera (V4L2 only; the driver picks the nearest).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(u32, u32)>,
    /// Frame rate requested from the camera (V4L2 only).
    #[arg(long)]
    pub fps: Option<u32>,
    /// Stop after this many classified frames.
    #[arg(long)]
    pub max_frames: Option<u64>,
    /// On a lost source, reopen it (retrying every second); on a corrupt frame, skip it.
    #[arg(long)]
    pub reconnect: bool,
    /// Seconds without any frame before the source counts as lost.
    #[arg(long, default_value_t = 10.0)]
    pub frame_timeout: f64,
    /// Classes shown per frame.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// One JSON object per frame, then a summary object, on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub backend: crate::backend::BackendArgs,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| format!("expected WxH, like 640x480, not `{s}`"))?;
    let p = |v: &str| v.parse::<u32>().ok().filter(|&v| v > 0).ok_or_else(|| format!("bad size `{s}`"));
    Ok((p(w)?, p(h)?))
}

fn open_source(args: &CameraArgs) -> Result<Box<dyn FrameSource>> {
    if (args.size.is_some() || args.fps.is_some()) && (args.stdin_mjpeg || args.dir.is_some()) {
        bail!("--size and --fps configure a V4L2 camera; set them on the producer of the stream instead");
    }
    if args.stdin_mjpeg {
        return Ok(Box::new(mjpeg::MjpegReader::new(std::io::stdin(), "stdin")));
    }
    if let Some(d) = &args.dir {
        return Ok(Box::new(dir::DirSource::open(d)?));
    }
    let device = args.device.clone().unwrap_or_else(|| PathBuf::from("/dev/video0"));
    open_v4l2(device, args)
}

#[cfg(feature = "camera")]
fn open_v4l2(device: PathBuf, args: &CameraArgs) -> Result<Box<dyn FrameSource>> {
    Ok(Box::new(v4l2::V4l2Source::open(device, args.size, args.fps)?))
}

#[cfg(not(feature = "camera"))]
fn open_v4l2(device: PathBuf, _: &CameraArgs) -> Result<Box<dyn FrameSource>> {
    bail!(
        "this resedge was built without V4L2 support, so it cannot open {}: rebuild with `--features camera`, or \
         pipe the camera through ffmpeg: `ffmpeg -f v4l2 -i {} -f mjpeg - | resedge camera MODEL --stdin-mjpeg`",
        device.display(),
        device.display()
    )
}

/// What the capture thread reports besides frames.
enum Event {
    Error(SourceError),
    Reconnecting,
    Reconnected(String),
    End,
}

/// The hand-over between the capture thread and the inference loop.
#[derive(Default)]
struct Slot {
    frame: Option<Frame>,
    events: VecDeque<Event>,
    captured: u64,
    dropped: u64,
}

struct Shared {
    slot: Mutex<Slot>,
    ready: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn push(&self, event: Event) {
        self.slot.lock().expect("capture lock").events.push_back(event);
        self.ready.notify_all();
    }
}

fn capture(mut source: Box<dyn FrameSource>, shared: &Shared, reconnect: bool) {
    let live = source.is_live();
    while !shared.stop.load(Ordering::Relaxed) {
        match source.next_frame() {
            Ok(Some(frame)) => {
                let mut slot = shared.slot.lock().expect("capture lock");
                if !live {
                    // On-demand sources wait until the last frame was taken.
                    while slot.frame.is_some() && !shared.stop.load(Ordering::Relaxed) {
                        slot = shared.ready.wait_timeout(slot, Duration::from_millis(100)).expect("capture lock").0;
                    }
                }
                slot.dropped += u64::from(slot.frame.replace(frame).is_some());
                slot.captured += 1;
                drop(slot);
                shared.ready.notify_all();
            }
            Ok(None) => return shared.push(Event::End),
            Err(e @ SourceError::Corrupt(_)) => {
                shared.push(Event::Error(e));
                if !reconnect {
                    return;
                }
            }
            Err(e @ SourceError::Lost(_)) => {
                shared.push(Event::Error(e));
                if !reconnect || !source.can_reconnect() {
                    return;
                }
                shared.push(Event::Reconnecting);
                let mut last_error = String::new();
                loop {
                    if shared.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    match source.reconnect() {
                        Ok(()) => {
                            shared.push(Event::Reconnected(source.describe()));
                            break;
                        }
                        Err(e) if e != last_error => {
                            eprintln!("reconnect failed: {e}; retrying every second");
                            last_error = e;
                        }
                        Err(_) => {}
                    }
                }
            }
        }
    }
}

/// Why the loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    MaxFrames,
    EndOfStream,
    Interrupted,
    SourceFailed,
}

impl Ending {
    fn describe(self) -> &'static str {
        match self {
            Ending::MaxFrames => "max frames reached",
            Ending::EndOfStream => "end of stream",
            Ending::Interrupted => "interrupted",
            Ending::SourceFailed => "source failed",
        }
    }
}

#[derive(Default)]
struct Stats {
    decode: Vec<f64>,
    preprocess: Vec<f64>,
    inference: Vec<f64>,
    latency: Vec<f64>,
    corrupt: u64,
    /// Completion times of the last frames, for the rolling FPS.
    recent: VecDeque<Instant>,
}

impl Stats {
    /// Frames per second over the last (up to) 30 frames.
    fn rolling_fps(&mut self, now: Instant) -> Option<f64> {
        self.recent.push_back(now);
        if self.recent.len() > 30 {
            self.recent.pop_front();
        }
        let span = now.duration_since(*self.recent.front()?).as_secs_f64();
        (self.recent.len() > 1 && span > 0.0).then(|| (self.recent.len() - 1) as f64 / span)
    }
}

fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (!s.is_empty()).then(|| s[s.len() / 2])
}

/// Runs the live loop; `Ok(false)` when the source failed.
pub fn camera(args: &CameraArgs) -> Result<bool> {
    let file =
        resedge::format::ModelFile::open(&args.model).with_context(|| format!("opening {}", args.model.display()))?;
    let model = file.model().with_context(|| format!("loading {}", args.model.display()))?;
    with_classifier(&model, &args.backend, &args.model, |clf| {
        let source = open_source(args)?;
        let description = source.describe();
        let can_reconnect = source.can_reconnect();
        eprintln!("camera: {description} -> {} ({})", model.name, args.model.display());
        let shared =
            Arc::new(Shared { slot: Mutex::new(Slot::default()), ready: Condvar::new(), stop: AtomicBool::new(false) });
        let handler_shared = Arc::clone(&shared);
        ctrlc::set_handler(move || {
            handler_shared.stop.store(true, Ordering::Relaxed);
            handler_shared.ready.notify_all();
        })
        .context("installing the Ctrl-C handler")?;
        let capture_shared = Arc::clone(&shared);
        let reconnect = args.reconnect;
        // Not joined: a capture thread blocked in read() (stdin) must not keep the process alive.
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || capture(source, &capture_shared, reconnect))
            .context("starting the capture thread")?;

        let mut out = std::io::stdout().lock();
        let mut stats = Stats::default();
        let started = Instant::now();
        let timeout = Duration::from_secs_f64(args.frame_timeout.max(0.1));
        let mut last_activity = Instant::now();
        let mut reconnecting = false;
        let mut processed = 0u64;
        let ending = loop {
            if args.max_frames.is_some_and(|m| processed >= m) {
                break Ending::MaxFrames;
            }
            let mut slot = shared.slot.lock().expect("capture lock");
            let (frame, event) = loop {
                if shared.stop.load(Ordering::Relaxed) {
                    break (None, None);
                }
                if let Some(frame) = slot.frame.take() {
                    break (Some(frame), None);
                }
                if let Some(event) = slot.events.pop_front() {
                    break (None, Some(event));
                }
                if !reconnecting && last_activity.elapsed() > timeout {
                    break (
                        None,
                        Some(Event::Error(SourceError::Lost(format!("no frame for {:.1} s", timeout.as_secs_f64())))),
                    );
                }
                slot = shared.ready.wait_timeout(slot, Duration::from_millis(100)).expect("capture lock").0;
            };
            let dropped = slot.dropped;
            drop(slot);
            shared.ready.notify_all();
            last_activity = Instant::now();
            if let Some(frame) = frame {
                let t0 = Instant::now();
                let img = match frame.decode() {
                    Ok(img) => img,
                    Err(e) => {
                        stats.corrupt += 1;
                        eprintln!("corrupt frame: {} from {description}: {e}", frame.name);
                        if args.reconnect {
                            continue;
                        }
                        break Ending::SourceFailed;
                    }
                };
                let decode = t0.elapsed();
                let p = clf.classify(&img, args.top)?;
                let now = Instant::now();
                processed += 1;
                let fps = stats.rolling_fps(now);
                let latency = now.duration_since(frame.captured);
                stats.decode.push(ms(decode));
                stats.preprocess.push(ms(p.preprocess));
                stats.inference.push(ms(p.inference));
                stats.latency.push(ms(latency));
                print_frame(
                    &mut out,
                    args.json,
                    processed,
                    &frame.name,
                    &p.top,
                    [decode, p.preprocess, p.inference, latency],
                    fps,
                    dropped,
                )?;
                continue;
            }
            match event {
                None => break Ending::Interrupted,
                Some(Event::End) => break Ending::EndOfStream,
                Some(Event::Reconnecting) => {
                    reconnecting = true;
                    eprintln!("reconnecting to {description} ...");
                }
                Some(Event::Reconnected(d)) => {
                    reconnecting = false;
                    eprintln!("reconnected: {d}");
                }
                Some(Event::Error(e)) => {
                    let corrupt = matches!(e, SourceError::Corrupt(_));
                    stats.corrupt += u64::from(corrupt);
                    let action = match (args.reconnect, corrupt, can_reconnect) {
                        (true, true, _) => "skipped",
                        (true, false, true) => "will reconnect",
                        (true, false, false) => "it cannot be reopened; stopping",
                        (false, _, _) => "stopping (use --reconnect to skip or reopen)",
                    };
                    eprintln!("{e} ({description}); {action}");
                    if !args.reconnect || (!corrupt && !can_reconnect) {
                        break Ending::SourceFailed;
                    }
                }
            }
        };
        shared.stop.store(true, Ordering::Relaxed);
        shared.ready.notify_all();
        let (captured, dropped) = {
            let slot = shared.slot.lock().expect("capture lock");
            (slot.captured, slot.dropped)
        };
        let elapsed = started.elapsed().as_secs_f64();
        let fps = if elapsed > 0.0 { processed as f64 / elapsed } else { 0.0 };
        let med = |v: &[f64]| median(v).map_or_else(|| "-".into(), |m| format!("{m:.2}"));
        if args.json {
            let summary = serde_json::json!({"summary": {
                "source": description, "ending": ending.describe(), "frames": processed, "captured": captured,
                "dropped": dropped, "corrupt": stats.corrupt, "seconds": elapsed, "fps": fps,
                "median_decode_ms": median(&stats.decode), "median_preprocess_ms": median(&stats.preprocess),
                "median_inference_ms": median(&stats.inference), "median_latency_ms": median(&stats.latency),
            }});
            writeln!(out, "{summary}")?;
        } else {
            writeln!(
                out,
                "summary: {processed} frames in {elapsed:.2} s ({fps:.1} fps), {captured} captured, {dropped} dropped, {} corrupt; \
                 median decode {} ms, preprocess {} ms, inference {} ms, capture-to-result {} ms; {}",
                stats.corrupt,
                med(&stats.decode),
                med(&stats.preprocess),
                med(&stats.inference),
                med(&stats.latency),
                ending.describe()
            )?;
        }
        out.flush()?;
        Ok(ending != Ending::SourceFailed)
    })
}

#[allow(clippy::too_many_arguments)]
fn print_frame(
    out: &mut impl Write,
    json: bool,
    n: u64,
    name: &str,
    top: &[Class],
    [decode, preprocess, inference, latency]: [Duration; 4],
    fps: Option<f64>,
    dropped: u64,
) -> Result<()> {
    if json {
        let line = serde_json::json!({
            "frame": n, "name": name, "top": top, "decode_ms": ms(decode), "preprocess_ms": ms(preprocess),
            "inference_ms": ms(inference), "latency_ms": ms(latency), "fps": fps, "dropped": dropped,
        });
        writeln!(out, "{line}")?;
    } else {
        let classes: Vec<String> = top.iter().map(|c| format!("{:.1}% {}", 100.0 * c.prob, c.label)).collect();
        writeln!(
            out,
            "#{n} {name}: {} | decode {:.2} ms, preprocess {:.2} ms, inference {:.2} ms, latency {:.2} ms | {} fps, {dropped} dropped",
            classes.join(", "),
            ms(decode),
            ms(preprocess),
            ms(inference),
            ms(latency),
            fps.map_or_else(|| "-".into(), |f| format!("{f:.1}")),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("640x480"), Ok((640, 480)));
        assert_eq!(parse_size("1280X720"), Ok((1280, 720)));
        assert!(parse_size("640").is_err());
        assert!(parse_size("0x480").is_err());
        assert!(parse_size("axb").is_err());
    }
}
