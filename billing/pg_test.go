package billing

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
)

// pgDSN returns the DSN of a fresh, empty PostgreSQL database for the
// test: in the server named by $TOPCDN_PG_DSN if set; else in a throwaway
// cluster the test starts with initdb and pg_ctl (run as the postgres user
// when the test runs as root, since initdb refuses root), listening only on
// a unix socket in its data directory. Without either the test is skipped,
// unless $TOPCDN_REQUIRE_TOOLS=1, when it fails.
func pgDSN(t *testing.T) string {
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
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database on %s: %v", server, err)
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

// pgBin finds a PostgreSQL server program on the PATH or in Debian's
// /usr/lib/postgresql/*/bin.
func pgBin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(matches) > 0 {
		return matches[len(matches)-1]
	}
	return ""
}

// cluster is the throwaway cluster the package's tests share: starting
// one takes seconds, a database in it a few milliseconds. TestMain stops
// it once every test is done.
var cluster struct {
	mu    sync.Mutex
	dsn   string
	stops []func()
}

// sharedCluster starts the package's cluster the first time it is asked
// for and returns its DSN.
func sharedCluster(t *testing.T) string {
	t.Helper()
	cluster.mu.Lock()
	defer cluster.mu.Unlock()
	if cluster.dsn == "" {
		cluster.dsn = startClusterFor(t, func(f func()) { cluster.stops = append(cluster.stops, f) })
	}
	return cluster.dsn
}

// TestMain runs the tests, then stops the shared cluster.
func TestMain(m *testing.M) {
	code := m.Run()
	for i := len(cluster.stops) - 1; i >= 0; i-- {
		cluster.stops[i]()
	}
	os.Exit(code)
}

// startClusterFor starts a cluster, registering its teardown with cleanup.
func startClusterFor(t *testing.T, cleanup func(func())) string {
	t.Helper()
	initdb, pgctl := pgBin("initdb"), pgBin("pg_ctl")
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
