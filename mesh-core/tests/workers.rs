//! `serve::Workers` over real sockets: a listener shared by several current-thread runtimes,
//! each on its own thread; a busy worker's share goes to the others; dropping the workers ends
//! their threads; a runtime that cannot be built is the start's error.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mesh_core::serve::Workers;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

fn current_thread() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Serves `listener` on every worker: each connection gets the name of the thread that
/// accepted it and, when it sends `b` first, blocks that thread for 2 s before answering (a
/// worker stuck in a long computation).
fn serve_thread_names(workers: &Workers, listener: TcpListener) -> io::Result<()> {
    for (handle, listener) in workers.handles().zip(workers.share(listener)?) {
        handle.spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut first = [0u8; 1];
                if tcp.read_exact(&mut first).await.is_err() {
                    continue;
                }
                if first[0] == b'b' {
                    std::thread::sleep(Duration::from_secs(2));
                }
                let name = std::thread::current().name().unwrap_or("?").to_owned();
                let _ = tcp.write_all(name.as_bytes()).await;
            }
        });
    }
    Ok(())
}

/// Which thread answered one connection that first sent `first`.
async fn ask(addr: SocketAddr, first: u8) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(&[first]).await.expect("write");
    let mut name = String::new();
    tcp.read_to_string(&mut name).await.expect("read");
    name
}

#[test]
fn a_shared_listener_is_served_by_every_worker_and_a_busy_one_leaves_its_share_to_the_others() {
    // The test drives its clients on a runtime of its own; the workers are three threads.
    let clients = current_thread().expect("runtime");
    let first = current_thread().expect("runtime");
    let first_handle = first.handle().clone();
    // The first runtime must be driven by someone: a thread of the test's, named like the
    // others, that runs until the test ends.
    let (end, ended) = oneshot::channel::<()>();
    let driver = std::thread::Builder::new()
        .name("mesh-worker-0".into())
        .spawn(move || {
            first.block_on(async move {
                let _ = ended.await;
            })
        })
        .expect("thread");
    let workers = Workers::start(first_handle, 2, current_thread).expect("workers");
    assert_eq!(workers.len(), 3);

    clients.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        serve_thread_names(&workers, listener).expect("share");

        // One connection blocks whichever worker takes it; while it is blocked, 60 more are
        // answered, none by the blocked worker and each within the test's patience.
        let blocked = tokio::spawn(ask(addr, b'b'));
        // Time for the blocking connection to be taken (its worker then sleeps 2 s).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut others = Vec::new();
        for _ in 0..60 {
            let name = tokio::time::timeout(Duration::from_millis(1500), ask(addr, b'n'))
                .await
                .expect("answered while a worker is blocked");
            others.push(name);
        }
        let blocked = blocked.await.expect("task");
        assert!(blocked.starts_with("mesh-worker-"), "{blocked}");
        assert!(
            others.iter().all(|name| *name != blocked),
            "the blocked worker {blocked} answered while blocked: {others:?}"
        );
        assert!(
            others.iter().all(|name| name.starts_with("mesh-worker-")),
            "{others:?}"
        );
    });
    drop(workers);
    let _ = end.send(());
    driver.join().expect("driver");
}

#[test]
fn dropping_the_workers_ends_their_threads_and_their_tasks() {
    let first = current_thread().expect("runtime");
    let workers = Workers::start(first.handle().clone(), 2, current_thread).expect("workers");
    let mut holding = Vec::new();
    for handle in workers.handles().skip(1) {
        let (keep, dropped) = oneshot::channel::<()>();
        handle.spawn(async move {
            let _keep = keep;
            std::future::pending::<()>().await;
        });
        holding.push(dropped);
    }
    first.block_on(async {
        // The two pending tasks (plus none on the first runtime) are counted.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(workers.alive_tasks() >= 2, "{}", workers.alive_tasks());
    });
    drop(workers);
    first.block_on(async {
        for dropped in holding {
            let outcome = tokio::time::timeout(Duration::from_secs(5), dropped)
                .await
                .expect("the worker's task was dropped with its runtime");
            assert!(outcome.is_err(), "the task's sender was dropped, not used");
        }
    });
}

#[test]
fn a_runtime_that_cannot_be_built_is_the_start_error() {
    let first = current_thread().expect("runtime");
    let error = Workers::start(first.handle().clone(), 2, || {
        Err(io::Error::other("no runtime for you"))
    })
    .expect_err("the build fails");
    assert_eq!(error.to_string(), "no runtime for you");

    let single = Workers::single(first.handle().clone());
    assert_eq!(single.len(), 1);
    first.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let shared = single.share(listener).expect("share");
        assert_eq!(shared.len(), 1);
    });
}

#[test]
fn tasks_go_to_the_less_loaded_of_two_workers_and_leave_their_count_when_they_end() {
    let first = current_thread().expect("runtime");
    let workers = Workers::start(first.handle().clone(), 2, current_thread).expect("workers");
    let mut ends = Vec::new();
    for _ in 0..30 {
        let (end, ended) = oneshot::channel::<()>();
        workers.spawn(async move {
            let _ = ended.await;
        });
        ends.push(end);
    }
    // Counted as given, before any of them ran.
    let loads = workers.loads();
    assert_eq!(loads.iter().sum::<usize>(), 30, "{loads:?}");
    // The less loaded of two random workers: none falls far behind (a random pick, or always
    // the same worker, would leave one with few or none).
    assert!(loads.iter().all(|&n| (7..=13).contains(&n)), "{loads:?}");
    drop(ends);
    first.block_on(async {
        for _ in 0..250 {
            if workers.loads().iter().sum::<usize>() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert_eq!(workers.loads(), vec![0, 0, 0]);
}
