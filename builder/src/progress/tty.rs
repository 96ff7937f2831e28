//! `--progress tty`: buildx's live frame (`[+] Building 1.2s (7/9)`, one line per vertex with
//! its timer, the last log lines of running vertices), redrawn at most 10 times a second
//! through indicatif, and a final static frame when the build ends.
//!
//! [`render_frame`] is a pure function of the state and the clock, so it is tested without
//! a terminal.

use std::io;
use std::time::{Duration, Instant, SystemTime};

use console::{measure_text_width, truncate_str, Term};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

use super::colors::{Palette, Tone};
use super::feed::{Feed, Next};
use super::state::{BuildState, Outcome, VertexState, LOG_TAIL};
use super::summary::BuildSummary;
use super::units;
use super::warnings;

/// Time between redraws.
const TICK: Duration = Duration::from_millis(100);

/// Width used when the terminal does not say.
const DEFAULT_WIDTH: usize = 80;

/// Renders one frame: the header, then each started vertex with its statuses and, while it
/// runs or after it failed, its last log lines. `height` limits the frame (ended vertices are
/// dropped first); `finished` renders the final frame.
pub fn render_frame(
    state: &BuildState,
    now: SystemTime,
    width: usize,
    height: Option<usize>,
    finished: bool,
) -> Vec<String> {
    render_toned(state, now, width, height, finished)
        .into_iter()
        .map(|(_, line)| line)
        .collect()
}

/// [`render_frame`] with the tone (colour class) of every line.
pub fn render_toned(
    state: &BuildState,
    now: SystemTime,
    width: usize,
    height: Option<usize>,
    finished: bool,
) -> Vec<(Tone, String)> {
    let (done, total) = state.counts();
    let start = state.first_event.unwrap_or(now);
    // Up to `now` also when finished: the build took until the display was finished
    // (exports included), and the final header must not show less than the last live one.
    let mut header = format!(
        "[+] Building {:.1}s ({done}/{total})",
        units::seconds_between(start, now)
    );
    if finished {
        header.push_str(if state.has_error() {
            " ERROR"
        } else {
            " FINISHED"
        });
    }

    let mut blocks: Vec<(bool, Vec<(Tone, String)>)> = state
        .vertices()
        .filter(|v| v.is_visible())
        .map(|v| {
            let tone = match v.outcome {
                None => Tone::Plain,
                Some(Outcome::Cached | Outcome::Done) => Tone::Done,
                Some(Outcome::Error(_)) => Tone::Error,
                Some(Outcome::Canceled) => Tone::Canceled,
            };
            let lines = vertex_block(v, now, width)
                .into_iter()
                .map(|l| (tone, l))
                .collect();
            (v.outcome.is_some(), lines)
        })
        .collect();

    if let Some(height) = height {
        let room = height.saturating_sub(1);
        let mut used: usize = blocks.iter().map(|(_, b)| b.len()).sum();
        // Drop ended vertices from the top first, then whatever is oldest.
        while used > room && blocks.len() > 1 {
            let pos = blocks.iter().position(|(ended, _)| *ended).unwrap_or(0);
            let (_, removed) = blocks.remove(pos);
            used -= removed.len();
        }
    }

    let header_tone = match (finished, state.has_error()) {
        (true, true) => Tone::Error,
        (true, false) => Tone::Done,
        _ => Tone::Plain,
    };
    let mut lines = vec![(header_tone, fit(&header, width))];
    lines.extend(blocks.into_iter().flat_map(|(_, b)| b));
    if let Some(height) = height {
        lines.truncate(height.max(1));
    }
    lines
}

fn vertex_block(v: &VertexState, now: SystemTime, width: usize) -> Vec<String> {
    let prefix = match v.outcome {
        Some(Outcome::Cached) => "CACHED ",
        Some(Outcome::Error(_)) => "ERROR ",
        Some(Outcome::Canceled) => "CANCELED ",
        _ => "",
    };
    let started = v.started.unwrap_or(now);
    let secs = units::seconds_between(started, v.completed.unwrap_or(now));
    let mut lines = vec![with_timer(
        &format!(" => {prefix}{}", v.name),
        &format!("{secs:.1}s"),
        width,
    )];
    for s in &v.statuses {
        let amount = units::progress(s.current, s.total);
        let left = if amount.is_empty() {
            format!(" => => {}", s.id)
        } else {
            format!(" => => {} {amount}", s.id)
        };
        let secs = units::seconds_between(s.started, s.completed.unwrap_or(now));
        lines.push(with_timer(&left, &format!("{secs:.1}s"), width));
    }
    let show_logs = v.is_running() || matches!(v.outcome, Some(Outcome::Error(_)));
    if show_logs {
        for line in v.recent_lines(LOG_TAIL) {
            lines.push(fit(&format!(" => => # {line}"), width));
        }
    }
    lines
}

/// `left` and `timer` on one line of exactly `width` columns, `left` cut if needed.
fn with_timer(left: &str, timer: &str, width: usize) -> String {
    let timer_width = measure_text_width(timer);
    let room = width.saturating_sub(timer_width + 1);
    let left = truncate_str(left, room, "");
    let pad = width
        .saturating_sub(measure_text_width(&left) + timer_width)
        .max(1);
    format!("{left}{}{timer}", " ".repeat(pad))
}

/// `line` cut to `width` columns.
fn fit(line: &str, width: usize) -> String {
    truncate_str(line, width, "").into_owned()
}

/// Drains `rx` and draws live frames on stderr until every sender is gone, then prints the
/// final frame and the warning summary.
pub fn run(feed: Feed) -> BuildSummary {
    run_on(feed, Term::stderr(), &Palette::from_process_env())
}

/// [`run`] on any terminal (tests use a recording one).
pub fn run_on<T: TermLike + Clone + 'static>(
    feed: Feed,
    term: T,
    palette: &Palette,
) -> BuildSummary {
    let target = ProgressDrawTarget::term_like_with_hz(Box::new(term.clone()), 10);
    let bar = ProgressBar::with_draw_target(None, target);
    if let Ok(style) = ProgressStyle::with_template("{msg}") {
        bar.set_style(style);
    }
    let mut state = BuildState::default();
    let mut last_draw: Option<Instant> = None;
    loop {
        let wait = last_draw.map_or(TICK, |t| TICK.saturating_sub(t.elapsed()));
        match feed.next(wait) {
            Next::Event(event) => state.apply(&event),
            Next::Idle => {}
            Next::End => break,
        }
        // Timers of running vertices move, so every tick redraws once something is shown.
        let due = last_draw.is_none_or(|t| t.elapsed() >= TICK);
        if due && state.first_event.is_some() {
            let frame = render_toned(
                &state,
                SystemTime::now(),
                width_of(&term),
                // One spare row: a frame as tall as the screen would scroll it.
                Some(usize::from(term.height()).saturating_sub(1)),
                false,
            );
            let painted: Vec<String> = frame.iter().map(|(t, l)| palette.paint(*t, l)).collect();
            bar.set_message(painted.join("\n"));
            last_draw = Some(Instant::now());
        }
    }
    bar.finish_and_clear();
    BuildSummary {
        display_error: final_frame(&state, &term, palette).err(),
        ..BuildSummary::from_state(&state)
    }
}

/// Prints the final frame and the warning summary as plain lines below the live area.
fn final_frame(state: &BuildState, term: &impl TermLike, palette: &Palette) -> io::Result<()> {
    let finished = render_toned(state, SystemTime::now(), width_of(term), None, true);
    if state.first_event.is_some() {
        for (tone, line) in finished {
            term.write_line(&palette.paint(tone, &line))?;
        }
    }
    let summary = warnings::summary(state.warnings.iter().map(|(_, w)| w));
    if !summary.is_empty() {
        term.write_line("")?;
        for line in summary {
            term.write_line(&palette.paint(Tone::Warning, &line))?;
        }
    }
    term.flush()
}

fn width_of(term: &impl TermLike) -> usize {
    match term.width() {
        0 => DEFAULT_WIDTH,
        w => usize::from(w),
    }
}
