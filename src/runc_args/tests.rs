use super::*;
use std::path::Path;

fn p(s: &str) -> Invocation {
    parse(&s.split_whitespace().map(OsString::from).collect::<Vec<_>>())
}

fn prepare(bundle: Option<&str>, id: &str) -> Action {
    Action::Prepare {
        bundle: bundle.map(PathBuf::from),
        id: id.into(),
    }
}

#[test]
fn containerd_create() {
    let inv = p(
        "--root /run/r --log /b/log.json --log-format json create --bundle /b --pid-file /b/pid ctr1",
    );
    assert_eq!(inv.command, Subcommand::Create);
    assert_eq!(inv.action, prepare(Some("/b"), "ctr1"));
    assert_eq!(inv.log.as_deref(), Some(Path::new("/b/log.json")));
    assert_eq!(inv.log_format.as_deref(), Some("json"));
    assert_eq!(inv.root.as_deref(), Some(Path::new("/run/r")));
    assert_eq!(inv.id(), Some("ctr1"));
    assert!(inv.prepares());
}

#[test]
fn bundle_spellings() {
    for s in [
        "create --bundle=/x id",
        "create -b /x id",
        "create -b=/x id",
        "create -bundle /x id",
        "run --console-socket /s -b /x id",
        "--debug --root=/r run --bundle /x -d id",
        "run -d=true --bundle /x id",
        "run --detach=false --keep -b /x id",
        "create -b /y -b /x id",
        "create --bundle /x -- id",
    ] {
        let inv = p(s);
        assert_eq!(inv.action, prepare(Some("/x"), "id"), "{s}");
    }
    assert_eq!(p("run id").action, prepare(None, "id"), "default: cwd");
    assert_eq!(
        p("run --bundle= id").action,
        prepare(None, "id"),
        "empty: cwd"
    );
}

#[test]
fn flags_after_the_id_are_reordered_as_runc_does() {
    for s in [
        "run id --bundle /x",
        "run id -b /x",
        "run id --bundle=/x",
        "create id -b=/x --pid-file /p",
        "run id -d --bundle /x",
        "run id --keep --bundle /x --no-pivot",
        "create --pid-file /p id --bundle /x",
    ] {
        assert_eq!(p(s).action, prepare(Some("/x"), "id"), "{s}");
    }
    // `--pid-file` takes `-b` as its value wherever it stands: the bundle is the cwd.
    assert_eq!(p("run --pid-file -b id").action, prepare(None, "id"));
    // A value flag before `--` takes it as its value.
    assert_eq!(p("run --bundle -- id").action, prepare(Some("--"), "id"));
}

#[test]
fn what_runc_rejects_after_reordering_is_refused() {
    for s in [
        // A bool flag takes the id along as "maybe a value": runc sees two arguments.
        "run -d id --bundle /x",
        "run id1 id2",
        "run id -- --bundle /x",
        "run -- id --bundle /x",
        "run id - --bundle /x",
        // --pid-file swallows --bundle; /x becomes a second argument.
        "run id --pid-file --bundle /x",
        // Unknown flags: runc 1.1.5 and 1.3 reject them; another runc might not.
        "run id --foo",
        "create --pidfd-sock /s id",
        "restore --pidfd-socket /s id",
        "create -b /x --bundle /y id",
        "run --detach=maybe id",
        "create --bundle",
        "create -=x id",
        // Reordered (urfave/cli strips three dashes) but bad syntax for Go.
        "create ---bundle /x id",
        "run id ---bundle /x",
        "run id -h --help",
    ] {
        assert!(p(s).refusal().is_some(), "{s}: {:?}", p(s).action);
    }
    let why = p("run -b /x --bundle /y id").refusal().unwrap().to_string();
    assert!(why.contains("two forms"), "{why}");
}

/// runc 1.2+'s `--pidfd-socket PATH` (containerd 2 and others pass it): read as runc 1.3
/// reads it; runc 1.1.5 rejects it itself and mounts nothing.
#[test]
fn pidfd_socket_is_read_as_runc_1_2_reads_it() {
    for s in [
        "create --pidfd-socket /s --bundle /x id",
        "create --pidfd-socket=/s -b /x id",
        "run id --pidfd-socket /s --bundle /x",
        "run -b /x id --pidfd-socket=/s",
        "run --pidfd-socket /s id -b=/x",
    ] {
        assert_eq!(p(s).action, prepare(Some("/x"), "id"), "{s}");
    }
    assert_eq!(p("create id --pidfd-socket /s").action, prepare(None, "id"));
    // The flag moves the next argument along when reordered: runc 1.3 sees two arguments
    // here, runc 1.1.5 (for which it is --pid-file's value) prepares /x.
    assert_eq!(
        p("run --pid-file --pidfd-socket id --bundle /x").action,
        prepare(Some("/x"), "id")
    );
}

#[test]
fn two_runcs_preparing_different_bundles_is_refused() {
    let (a, b) = (prepare(Some("/x"), "id"), prepare(Some("/y"), "id"));
    let both = agreed(&Subcommand::Run, vec![a.clone(), b]);
    assert!(matches!(both, Action::Refuse(_)), "{both:?}");
    let one = agreed(
        &Subcommand::Run,
        vec![Action::Refuse("x".into()), a.clone()],
    );
    assert_eq!(one, a);
    let none = agreed(
        &Subcommand::Run,
        vec![Action::PassThrough, Action::Refuse("x".into())],
    );
    assert!(
        matches!(none, Action::Refuse(_)),
        "the newest runc's reading"
    );
}

/// restore mounts the bundle's sources too (CRIU, through runc): its bundle and id are read
/// like create's, with restore's own flags.
#[test]
fn restore_is_prepared_like_create() {
    for s in [
        "restore --bundle /x id",
        "restore id -b /x",
        "restore --image-path /i --work-path /w -b=/x --detach id",
        "restore id --tcp-established --empty-ns network --bundle /x",
        "--root /r restore --manage-cgroups-mode soft --lsm-profile a:b -b /x -d id",
    ] {
        let inv = p(s);
        assert_eq!(inv.command, Subcommand::Restore, "{s}");
        assert_eq!(inv.action, prepare(Some("/x"), "id"), "{s}");
        assert!(inv.prepares(), "{s}");
    }
    assert_eq!(p("restore id").action, prepare(None, "id"));
    assert_eq!(p("restore -h id").action, Action::PassThrough);
    assert_eq!(p("restore").action, Action::PassThrough);
    assert!(p("restore id1 id2").refusal().is_some());
    assert!(p("--foo restore id").refusal().is_some());
}

#[test]
fn help_never_prepares() {
    for s in [
        "run -h",
        "create -h",
        "run --help",
        "create id -h",
        "run id --help",
        "run -h=true id",
        "run --bundle /x -h id",
        "create id --bundle /x --help=1",
        "delete -h",
        "delete id --help",
        "--help run id",
        "-h create --bundle /x id",
        "-v run id",
        "--version create id",
        "help run",
        "h create",
    ] {
        let inv = p(s);
        assert_eq!(inv.action, Action::PassThrough, "{s}");
        assert!(!inv.prepares(), "{s}");
    }
    assert_eq!(p("run -h=false id").action, prepare(None, "id"));
    assert_eq!(p("run --help=f id").action, prepare(None, "id"));
}

#[test]
fn what_runc_reports_itself_passes_through() {
    for s in ["", "run", "create -b /x", "list", "state id", "foo -h"] {
        let inv = p(s);
        assert_eq!(inv.action, Action::PassThrough, "{s}");
    }
    let empty_id = parse(&["run".into(), "".into()]);
    assert_eq!(empty_id.action, Action::PassThrough);
    assert_eq!(p("foo").command, Subcommand::Other("foo".into()));
    // A global usage error that cannot be create/run: runc reports it.
    assert_eq!(p("--foo list").action, Action::PassThrough);
    // One that mentions create/run is refused.
    assert!(p("--foo create id").refusal().is_some());
    assert!(p("--log").refusal().is_none());
    assert!(p("--root=/r --criu run id").refusal().is_none());
}

#[test]
fn global_flag_values_are_not_subcommands() {
    let inv = p("--root create --log run start id");
    assert_eq!(inv.command, Subcommand::Other("start".into()));
    assert!(!inv.prepares());
    assert_eq!(inv.root.as_deref(), Some(Path::new("create")));
    // Global flags are not reordered: after the subcommand they are the subcommand's.
    assert!(p("run id --root /r").refusal().is_some());
    // Bool global flags take no value.
    assert_eq!(p("--debug run id").action, prepare(None, "id"));
    assert_eq!(
        p("--systemd-cgroup=true run id").action,
        prepare(None, "id")
    );
}

#[test]
fn delete_ids() {
    for s in [
        "delete id",
        "delete --force id",
        "delete id -f",
        "delete -f=true id",
    ] {
        let inv = p(s);
        assert_eq!(inv.command, Subcommand::Delete, "{s}");
        assert_eq!(inv.action, Action::Delete { id: "id".into() }, "{s}");
    }
    for s in ["delete", "delete a b", "delete --bogus id", "delete -h id"] {
        assert_eq!(p(s).action, Action::PassThrough, "{s}");
    }
}

#[test]
fn non_utf8_and_odd_bytes_hold() {
    use std::os::unix::ffi::OsStringExt;
    let args: Vec<OsString> = [&b"run"[..], b"id\xff", b"--bundle", b"/x\xfe"]
        .iter()
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    let inv = parse(&args);
    assert_eq!(
        inv.bundle(),
        Some(Path::new(std::ffi::OsStr::from_bytes(b"/x\xfe")))
    );
    assert!(inv.prepares());
}
