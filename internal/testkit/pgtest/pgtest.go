// Package pgtest gives tests PostgreSQL databases: a fresh, empty database
// per test, in one throwaway cluster per test binary (or in the server
// $TOPCDN_PG_DSN names). Where PostgreSQL is not installed the tests that
// ask for it are skipped, unless $TOPCDN_REQUIRE_TOOLS=1, when they fail.
// Import it only from _test.go files; a package that uses it runs its
// tests through Main.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// cluster is the throwaway cluster a test binary's tests share: starting
// one takes seconds, a database in it a few milliseconds. It is package
// state for that reason; Main stops it once every test is done.
var cluster struct {
	mu    sync.Mutex
	main  bool // Main runs the tests
	dsn   string
	stops []func()
}

// Main runs m's tests, then stops the cluster they started, and returns
// the exit code. A package whose tests call DSN or Dialects calls it from
// its TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// m is a *testing.M, or what runs one (testkit.Main's Runner, to use
// both).
func Main(m interface{ Run() int }) int {
	cluster.mu.Lock()
	cluster.main = true
	cluster.mu.Unlock()
	code := m.Run()
	cluster.mu.Lock()
	defer cluster.mu.Unlock()
	for i := len(cluster.stops) - 1; i >= 0; i-- {
		cluster.stops[i]()
	}
	cluster.stops, cluster.dsn = nil, ""
	return code
}

// Dialects runs f as two subtests, each with the DSN of a fresh, empty
// database: "sqlite", a file in the subtest's temporary directory, and
// "postgres", from DSN (skipped as DSN skips).
func Dialects(t *testing.T, f func(t *testing.T, dsn string)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { f(t, filepath.Join(t.TempDir(), "test.db")) })
	t.Run("postgres", func(t *testing.T) { f(t, DSN(t)) })
}

// DSN returns the DSN of a fresh, empty PostgreSQL database, dropped when
// t ends: in the server $TOPCDN_PG_DSN names if set; else in the test
// binary's throwaway cluster, started with initdb and pg_ctl on first use
// (as the postgres user when the test runs as root, since initdb refuses
// root), listening only on a unix socket in its data directory. Without
// either, or with -short, t is skipped; without either and with
// $TOPCDN_REQUIRE_TOOLS=1, it fails.
func DSN(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("PostgreSQL tests are not short")
	}
	server := os.Getenv("TOPCDN_PG_DSN")
	if server == "" {
		server = sharedCluster(t)
	}
	db, err := sql.Open("pgx", server)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := make([]byte, 6)
	rand.Read(b)
	name := "topcdn_test_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// FILE_COPY (PostgreSQL 15 on) copies the empty template a few times
	// faster than the default; an older server takes the default.
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name+" STRATEGY = FILE_COPY"); err != nil {
		if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
			t.Fatalf("create database on %s: %v", server, err)
		}
	}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", server)
		if err != nil {
			return
		}
		defer db.Close()
		db.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	})
	u, err := url.Parse(server)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// sharedCluster starts the test binary's cluster the first time it is
// asked for and returns its DSN.
func sharedCluster(t testing.TB) string {
	t.Helper()
	cluster.mu.Lock()
	defer cluster.mu.Unlock()
	if !cluster.main {
		t.Fatal("pgtest needs func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }")
	}
	if cluster.dsn == "" {
		cluster.dsn = startCluster(t, func(f func()) { cluster.stops = append(cluster.stops, f) })
	}
	return cluster.dsn
}

// bin finds a PostgreSQL server program on the PATH or in Debian's
// /usr/lib/postgresql/*/bin.
func bin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(matches) > 0 {
		return matches[len(matches)-1]
	}
	return ""
}

// startCluster starts a cluster, registering its teardown with cleanup.
func startCluster(t testing.TB, cleanup func(func())) string {
	t.Helper()
	initdb, pgctl := bin("initdb"), bin("pg_ctl")
	if initdb == "" || pgctl == "" {
		if os.Getenv("TOPCDN_REQUIRE_TOOLS") == "1" {
			t.Fatal("PostgreSQL (initdb, pg_ctl) not installed and TOPCDN_REQUIRE_TOOLS=1; apt-get install postgresql")
		}
		t.Skip("PostgreSQL not installed (apt-get install postgresql) and TOPCDN_PG_DSN unset")
	}
	// The cluster's directory must be the server user's: not t.TempDir(),
	// whose parents are private to the test's user.
	dir, err := os.MkdirTemp("", "topcdn-pg-")
	if err != nil {
		t.Fatal(err)
	}
	cleanup(func() { os.RemoveAll(dir) })
	var asUser []string
	owner := "postgres"
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs a postgres user for initdb: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		asUser = []string{"runuser", "-u", "postgres", "--"}
	} else if u, err := user.Current(); err == nil {
		owner = u.Username
	}
	pgRun := func(args ...string) {
		t.Helper()
		full := append(append([]string(nil), asUser...), args...)
		cmd := exec.Command(full[0], full[1:]...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	data := filepath.Join(dir, "data")
	pgRun(initdb, "-D", data, "-U", owner, "--auth=trust", "--no-sync", "-E", "UTF8")
	pgRun(pgctl, "-D", data, "-l", filepath.Join(dir, "log"), "-w", "-t", "60",
		"-o", "-k "+dir+" -c listen_addresses='' -c fsync=off", "start")
	cleanup(func() {
		full := append(append([]string(nil), asUser...), pgctl, "-D", data, "-m", "immediate", "-w", "stop")
		exec.Command(full[0], full[1:]...).Run()
	})
	return "postgres://" + owner + "@/postgres?host=" + url.QueryEscape(dir)
}
