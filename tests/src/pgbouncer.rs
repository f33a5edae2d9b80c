//! Debian's PgBouncer (`dev/stack up` installs it) in front of the stack's PostgreSQL, in
//! transaction pooling mode as large deployments run it, for every database of the server.
//! Each test starts its own, so the pooled server connections end with the test and its
//! database can be dropped.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

const BINARY: &str = "/usr/sbin/pgbouncer";

pub struct PrivatePgBouncer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    user: String,
    password: String,
}

/// The user and password of a `postgres://user:password@host:port/db` URL.
fn credentials(url: &str) -> (String, String, String) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (auth, server) = rest.split_once('@').expect("credentials in DATABASE_URL");
    let (user, password) = auth.split_once(':').expect("a password in DATABASE_URL");
    let server = server.split('/').next().unwrap_or(server);
    (user.to_owned(), password.to_owned(), server.to_owned())
}

impl PrivatePgBouncer {
    pub fn start() -> Self {
        assert!(
            std::path::Path::new(BINARY).exists(),
            "{BINARY} is missing: `dev/stack up` installs Debian's pgbouncer"
        );
        let (user, password, server) = credentials(&crate::stack::database_url());
        let (host, pg_port) = server.rsplit_once(':').expect("host:port in DATABASE_URL");
        let port = crate::stack::free_port();
        let dir = std::env::temp_dir().join(crate::stack::unique("fleet-pgbouncer"));
        std::fs::create_dir_all(&dir).unwrap();
        // The stack's owner, and the api's read-only test login.
        std::fs::write(
            dir.join("users.txt"),
            format!(
                "\"{user}\" \"{password}\"\n\"{}\" \"{}\"\n",
                crate::api_server::LOGIN,
                crate::api_server::PASSWORD
            ),
        )
        .unwrap();
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n\
                 * = host={host} port={pg_port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = scram-sha-256\n\
                 auth_file = {users}\n\
                 pool_mode = transaction\n\
                 default_pool_size = 20\n\
                 max_client_conn = 2000\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 logfile = {log}\n",
                users = dir.join("users.txt").display(),
                log = dir.join("pgbouncer.log").display(),
            ),
        )
        .unwrap();
        if crate::pg::is_root() {
            let ok = std::process::Command::new("chown")
                .args(["-R", "postgres:", dir.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(ok.success(), "chown {}", dir.display());
        }
        let child = crate::pg::as_postgres(std::path::Path::new(BINARY))
            .arg(&ini)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let bouncer = Self {
            port,
            dir,
            child: Some(child),
            user,
            password,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return bouncer;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "pgbouncer did not listen on {port}: {}",
            std::fs::read_to_string(bouncer.dir.join("pgbouncer.log")).unwrap_or_default()
        );
    }

    /// The URL of `database` through this pooler.
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{database}",
            self.user, self.password, self.port
        )
    }

    /// The URL of `pool`'s database through this pooler as the api's test login.
    pub fn url_as_api_login(&self, pool: &sqlx::PgPool) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            crate::api_server::LOGIN,
            crate::api_server::PASSWORD,
            self.port,
            pool.connect_options().get_database().unwrap_or_default()
        )
    }

    /// The URL of the database a `#[sqlx::test]` made, through this pooler.
    pub fn url_of(&self, pool: &sqlx::PgPool) -> String {
        self.url_for(
            pool.connect_options()
                .get_database()
                .expect("a named test database"),
        )
    }
}

impl Drop for PrivatePgBouncer {
    fn drop(&mut self) {
        // runuser forwards the signal to pgbouncer and waits for it.
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
