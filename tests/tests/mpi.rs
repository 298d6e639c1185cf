//! Runs of several processes under `mpirun` (OpenMPI, `--oversubscribe` on a 2-core
//! machine): pipelines are bit for bit the single-process run, data-parallel replicas train,
//! a run resumes on any number of processes and stages, and a failure or the death of one
//! rank ends the whole run, naming the rank, with the last checkpoint intact.
//!
//! This test binary is its own MPI program: started by `mpirun` with `AUGLOCAL_MPI_CHILD`
//! set, it runs the `auglocal` command line in-process with the arguments it was given, so
//! no separate binary has to be found. `tests/run.sh` installs OpenMPI where it is missing;
//! without `mpirun` these tests fail, saying so.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::metrics_without_timings;

/// The child side: the command line, as the `auglocal` binary would run it.
fn child() -> ! {
    if let (Some(dir), Ok(rank)) = (
        std::env::var_os("AUGLOCAL_PID_DIR"),
        std::env::var("OMPI_COMM_WORLD_RANK"),
    ) {
        let _ = std::fs::write(
            Path::new(&dir).join(format!("rank-{rank}")),
            std::process::id().to_string(),
        );
    }
    match auglocal_cli::run(std::env::args(), &mut std::io::stdout()) {
        Ok(()) => std::process::exit(0),
        // As the binary: ranks other than the writer end an interrupted run without a word.
        Err(e) if matches!(e.downcast_ref(), Some(auglocal_cli::Interrupted(None))) => {
            std::process::exit(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1)
        }
    }
}

/// What a run of `mpirun` left.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// `mpirun -np n <this binary> ARGS...`, killed after `limit`.
fn mpirun(n: usize, args: &[&str], env: &[(&str, &Path)], limit: Duration) -> Run {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let mut command = Command::new("mpirun");
    command
        .args(["--oversubscribe", "-np", &n.to_string()])
        .arg(&exe)
        .args(args)
        .env("AUGLOCAL_MPI_CHILD", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command.spawn().unwrap_or_else(|e| {
        panic!("cannot start mpirun ({e}): install OpenMPI (Debian: apt-get install openmpi-bin libopenmpi-dev libclang-dev), or run bash tests/run.sh, which does")
    });
    let started = Instant::now();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        while started.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let output = child.wait_with_output().expect("mpirun ends");
    drop(watchdog);
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The same command line in this process, alone.
fn alone(args: &[&str]) -> anyhow::Result<String> {
    let mut out = Vec::new();
    let mut argv = vec!["auglocal"];
    argv.extend_from_slice(args);
    auglocal_cli::run(argv, &mut out)?;
    Ok(String::from_utf8(out)?)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// Weights and momentum of a run's checkpoint.
fn checkpoint(run: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let dir = run.join("checkpoint");
    Ok((
        std::fs::read(dir.join("model.safetensors"))?,
        std::fs::read(dir.join("optimizer.safetensors"))?,
    ))
}

/// A short run on the embedded data: 192 images in batches of 32 (6 steps an epoch), 2
/// epochs unless `rest` says otherwise.
fn run_args<'a>(out: &'a Path, model: &'a str, method: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--out",
        path(out),
        "--model",
        model,
        "--method",
        method,
        "--train-size",
        "192",
        "--test-size",
        "64",
        "--batch-size",
        "32",
        "--threads",
        "1",
    ];
    if !rest.contains(&"--epochs") {
        args.extend(["--epochs", "2"]);
    }
    args.extend_from_slice(rest);
    args
}

const LIMIT: Duration = Duration::from_secs(180);

fn assert_ran(run: &Run, what: &str) {
    assert!(
        run.success,
        "{what} failed:\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

fn pipelines_are_the_single_process_run_bit_for_bit() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    for (method, processes, extra) in [
        // ResNet-8, AugLocal d = 1: 3 modules, on 2 stages; the best epoch's checkpoint
        // too (every rank gathers it when the writer's accuracy improves).
        (
            "auglocal",
            2,
            vec!["--aux-depth", "1", "--pyramid", "0", "--save-best"],
        ),
        // InfoPro (its losses read the images, which travel with the activations): 4
        // modules on 3 stages.
        ("infopro", 3, vec![]),
    ] {
        let single = tmp.path().join(format!("{method}-single"));
        alone(&run_args(&single, "resnet8", method, &extra))?;
        let piped = tmp.path().join(format!("{method}-piped"));
        let n = processes.to_string();
        let mut args = run_args(&piped, "resnet8", method, &extra);
        args.extend(["--stages", &n]);
        let run = mpirun(processes, &args, &[], LIMIT);
        assert_ran(&run, &format!("{method} on {processes} stages"));
        assert!(
            run.stdout.contains(&format!(
                "{processes} processes: {processes} pipeline stages x 1 data-parallel replicas"
            )),
            "{}",
            run.stdout
        );
        assert!(
            checkpoint(&single)? == checkpoint(&piped)?,
            "{method}: the checkpoints differ"
        );
        if extra.contains(&"--save-best") {
            let best = |run: &Path| std::fs::read(run.join("checkpoint-best/model.safetensors"));
            assert!(
                best(&single)? == best(&piped)?,
                "the best checkpoints differ"
            );
        }
        assert_eq!(
            metrics_without_timings(&single)?,
            metrics_without_timings(&piped)?,
            "{method}"
        );
        assert_eq!(metrics_without_timings(&piped)?.len(), 2);
    }
    Ok(())
}

fn a_run_resumes_on_other_processes_and_stages() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let extra = ["--aux-depth", "1", "--pyramid", "0"];
    let straight = tmp.path().join("straight");
    alone(&run_args(&straight, "resnet8", "auglocal", &extra))?;
    // Alone to step 4 (mid-epoch 1), then on 2 stages to the end: the straight run's bytes.
    let moved = tmp.path().join("moved");
    let mut first = run_args(&moved, "resnet8", "auglocal", &extra);
    first.extend(["--max-steps", "4"]);
    alone(&first)?;
    let moved_str = path(&moved).to_string();
    let resume = [
        "train",
        "--resume",
        &moved_str,
        "--stages",
        "2",
        "--threads",
        "1",
    ];
    let run = mpirun(2, &resume, &[], LIMIT);
    assert_ran(&run, "the resume on 2 stages");
    assert!(
        checkpoint(&straight)? == checkpoint(&moved)?,
        "resumed on 2 stages, the checkpoints differ"
    );
    assert_eq!(
        metrics_without_timings(&straight)?,
        metrics_without_timings(&moved)?
    );

    // Two data-parallel replicas stop mid-epoch; one process finishes the run.
    let parallel = tmp.path().join("parallel");
    let mut args = run_args(&parallel, "resnet8", "auglocal", &extra);
    args.extend(["--max-steps", "8"]);
    let run = mpirun(2, &args, &[], LIMIT);
    assert_ran(&run, "2 replicas");
    assert!(
        run.stdout
            .contains("2 processes: 1 pipeline stages x 2 data-parallel replicas"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("stopped after 8 steps (--max-steps) in epoch 2, batch 2/6"),
        "{}",
        run.stdout
    );
    let epoch1 = metrics_without_timings(&parallel)?;
    assert_eq!(epoch1.len(), 1);
    assert_eq!(
        epoch1[0]["steps"], 6,
        "every step is a whole batch over both replicas"
    );
    let loss = epoch1[0]["train_loss"].as_f64().unwrap_or(f64::NAN);
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
    let parallel_str = path(&parallel).to_string();
    alone(&["train", "--resume", &parallel_str, "--threads", "1"])?;
    assert_eq!(metrics_without_timings(&parallel)?.len(), 2);
    Ok(())
}

/// Once the run in `run_dir` has a checkpoint, sends `signal` (as `kill` takes it) to each
/// of `ranks`, found by the pids the children wrote to `pids`. The thread returns the pids
/// signalled, or `None` when no checkpoint appeared within two minutes.
fn signal_when_checkpointed(
    run_dir: &Path,
    pids: &Path,
    ranks: &'static [usize],
    signal: &'static str,
) -> std::thread::JoinHandle<Option<Vec<String>>> {
    let (pids, run_dir) = (pids.to_path_buf(), run_dir.to_path_buf());
    std::thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            let checkpointed = run_dir.join("checkpoint").join("state.json").is_file();
            let found: Vec<String> = ranks
                .iter()
                .filter_map(|r| std::fs::read_to_string(pids.join(format!("rank-{r}"))).ok())
                .map(|pid| pid.trim().to_string())
                .collect();
            if checkpointed && found.len() == ranks.len() {
                for pid in &found {
                    let _ = Command::new("kill").args([signal, pid]).status();
                }
                return Some(found);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    })
}

/// Resumes the run in `run_dir` alone for `more` steps and checks its checkpoint moved
/// on by as many; returns the step it resumed from.
fn resume_alone_for(run_dir: &Path, more: u64) -> anyhow::Result<u64> {
    let steps = || -> anyhow::Result<u64> {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run_dir.join("checkpoint/state.json"))?)?;
        state["steps"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no step count in {state}"))
    };
    let from = steps()?;
    let until = (from + more).to_string();
    alone(&[
        "train",
        "--resume",
        path(run_dir),
        "--max-steps",
        &until,
        "--threads",
        "1",
    ])?;
    assert_eq!(steps()?, from + more, "the resumed run did not train on");
    Ok(from)
}

/// A 2-stage run that checkpoints after every step and would go on for long: one to stop
/// from outside.
const LONG_PIPELINE: [&str; 8] = [
    "--aux-depth",
    "1",
    "--stages",
    "2",
    "--checkpoint-every",
    "1",
    "--epochs",
    "1000",
];

fn a_killed_rank_ends_the_run_and_its_checkpoint_resumes() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run_dir = tmp.path().join("run");
    let pids = tmp.path().join("pids");
    std::fs::create_dir(&pids)?;
    let args = run_args(&run_dir, "resnet8", "auglocal", &LONG_PIPELINE);
    // Rank 0 is stage 0, which the writer (rank 1) waits for.
    let killer = signal_when_checkpointed(&run_dir, &pids, &[0], "-9");
    let started = Instant::now();
    let run = mpirun(2, &args, &[("AUGLOCAL_PID_DIR", &pids)], LIMIT);
    let seconds = started.elapsed().as_secs_f64();
    let killed = killer.join().expect("the killer thread ends");
    assert!(
        killed.is_some(),
        "no checkpoint appeared to kill after:\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(!run.success, "the run went on after a rank died");
    assert!(
        run.stderr.contains("rank 0") && run.stderr.contains("signal 9"),
        "mpirun does not name the dead rank:\n{}",
        run.stderr
    );
    assert!(seconds < 100.0, "the run took {seconds:.0} s to end");
    // The last checkpoint is whole: one process resumes it and trains on.
    resume_alone_for(&run_dir, 2)?;
    Ok(())
}

/// Ctrl-C reaches every process of the terminal's foreground group: every rank stops after
/// the same step, the checkpoint is written once, the writer alone says how to go on, and
/// no rank is aborted.
fn an_interrupted_run_stops_every_rank_at_one_checkpoint() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run_dir = tmp.path().join("run");
    let pids = tmp.path().join("pids");
    std::fs::create_dir(&pids)?;
    let args = run_args(&run_dir, "resnet8", "auglocal", &LONG_PIPELINE);
    let interrupter = signal_when_checkpointed(&run_dir, &pids, &[0, 1], "-INT");
    let run = mpirun(2, &args, &[("AUGLOCAL_PID_DIR", &pids)], LIMIT);
    assert!(
        interrupter.join().expect("the thread ends").is_some(),
        "no checkpoint appeared to interrupt after:\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(!run.success, "an interrupted run ended with status 0");
    assert_eq!(
        run.stderr.matches("interrupted after step").count(),
        1,
        "the writer, and only it, says where the run stopped:\n{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("MPI_ABORT") && !run.stderr.contains("error on rank"),
        "an interruption is not a failure of a rank:\n{}",
        run.stderr
    );
    // The step it names is the checkpoint's, and one process goes on from it.
    let steps = resume_alone_for(&run_dir, 1)?;
    assert!(
        run.stderr
            .contains(&format!("interrupted after step {steps} ")),
        "checkpoint at step {steps}:\n{}",
        run.stderr
    );
    Ok(())
}

fn a_failing_rank_is_named_and_ends_every_rank() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let run_dir = tmp.path().join("nan");
    // A learning rate no network survives: a loss turns non-finite within a few steps.
    let mut args = run_args(&run_dir, "resnet8", "auglocal", &["--aux-depth", "1"]);
    args.extend(["--stages", "2", "--lr", "1e30"]);
    let run = mpirun(2, &args, &[], LIMIT);
    assert!(!run.success);
    assert!(
        run.stderr.contains("error on rank ") && run.stderr.contains("non-finite"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("(or pass --on-nan skip"),
        "{}",
        run.stderr
    );
    // Stages that do not divide the processes, and stages without processes.
    let bad = tmp.path().join("bad");
    let mut args = run_args(&bad, "resnet8", "auglocal", &["--aux-depth", "1"]);
    args.extend(["--stages", "2"]);
    let run = mpirun(3, &args, &[], LIMIT);
    assert!(!run.success);
    assert!(
        run.stderr.contains("invalid pipeline stages: 2 for 3 processes (valid: a divisor of the number of processes: 1, 3)"),
        "{}",
        run.stderr
    );
    let err = alone(&args).expect_err("2 stages of 1 process");
    assert_eq!(
        format!("{err:#}"),
        "--stages 2 needs a multiple of 2 processes and this run has 1; start them with `mpirun -np 2 auglocal train ...` (or `srun -n 2`)"
    );
    Ok(())
}

fn man_trains_data_parallel_but_not_on_stages() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // Two replicas: every module's sums, then its update, then MAN's moving average; the
    // checkpoint holds EMA's copies.
    let run_dir = tmp.path().join("man");
    let args = run_args(&run_dir, "resnet8", "dgl+man+hpff", &["--epochs", "1"]);
    let run = mpirun(2, &args, &[], LIMIT);
    assert_ran(&run, "dgl+man+hpff on 2 replicas");
    let epochs = metrics_without_timings(&run_dir)?;
    let loss = epochs[0]["train_loss"].as_f64().unwrap_or(f64::NAN);
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
    let (model, _) = checkpoint(&run_dir)?;
    let tensors = safetensors::SafeTensors::deserialize(&model)?;
    assert!(
        tensors.names().contains(&"aux.0.man.ema.conv1.weight"),
        "the checkpoint lacks MAN's EMA copies"
    );
    // On 2 stages, EMA would follow a unit only the other stage trains.
    let staged = tmp.path().join("staged");
    let mut args = run_args(&staged, "resnet8", "dgl+man", &["--epochs", "1"]);
    args.extend(["--stages", "2"]);
    let run = mpirun(2, &args, &[], LIMIT);
    assert!(!run.success);
    assert!(
        run.stderr.contains("--method dgl+man with --stages 2: MAN's moving average follows the first unit of the next module"),
        "{}",
        run.stderr
    );
    Ok(())
}

type Test = fn() -> anyhow::Result<()>;

fn main() {
    if std::env::var_os("AUGLOCAL_MPI_CHILD").is_some() {
        child();
    }
    let tests: [(&str, Test); 6] = [
        (
            "pipelines_are_the_single_process_run_bit_for_bit",
            pipelines_are_the_single_process_run_bit_for_bit,
        ),
        (
            "a_run_resumes_on_other_processes_and_stages",
            a_run_resumes_on_other_processes_and_stages,
        ),
        (
            "a_killed_rank_ends_the_run_and_its_checkpoint_resumes",
            a_killed_rank_ends_the_run_and_its_checkpoint_resumes,
        ),
        (
            "an_interrupted_run_stops_every_rank_at_one_checkpoint",
            an_interrupted_run_stops_every_rank_at_one_checkpoint,
        ),
        (
            "a_failing_rank_is_named_and_ends_every_rank",
            a_failing_rank_is_named_and_ends_every_rank,
        ),
        (
            "man_trains_data_parallel_but_not_on_stages",
            man_trains_data_parallel_but_not_on_stages,
        ),
    ];
    // `cargo test -- NAME` runs the tests whose names contain NAME.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let chosen: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", chosen.len());
    let mut failed = Vec::new();
    for (name, test) in &chosen {
        let outcome = std::panic::catch_unwind(test);
        let ok = matches!(outcome, Ok(Ok(())));
        if let Ok(Err(e)) = &outcome {
            eprintln!("{name}: {e:#}");
        }
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(*name);
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; {} filtered out\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        chosen.len() - failed.len(),
        failed.len(),
        tests.len() - chosen.len()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
