package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// pgServer is the PostgreSQL server the scale drill keeps its databases
// in: a throwaway cluster it started, or one named by -pg.
type pgServer struct {
	// dsn is the server's maintenance database (postgres).
	dsn string
	// dbs are the databases made for the drill, dropped by stop.
	dbs []string
	// stopCluster stops and removes a throwaway cluster; nil for -pg.
	stopCluster func()
	// pid is the postmaster's process ID (0: unknown, a server of -pg).
	pid int
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

// startPG starts a throwaway cluster as internal/testkit/pgtest does: initdb
// and pg_ctl (as the postgres user when run as root, since initdb refuses
// root), listening only on a unix socket in its directory. fsync off makes
// commits free of disk flushes (tests' setting); on is a real server's.
func startPG(ctx context.Context, fsync bool) (*pgServer, error) {
	initdb, pgctl := pgBin("initdb"), pgBin("pg_ctl")
	if initdb == "" || pgctl == "" {
		return nil, errors.New("PostgreSQL (initdb, pg_ctl) not found: apt-get install postgresql, or give -pg DSN")
	}
	dir, err := os.MkdirTemp("", "topcdn-scale-pg-")
	if err != nil {
		return nil, err
	}
	var asUser []string
	owner := "postgres"
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root needs a postgres user for initdb: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		asUser = []string{"runuser", "-u", "postgres", "--"}
	} else if u, err := user.Current(); err == nil {
		owner = u.Username
	}
	run := func(timeout time.Duration, args ...string) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		full := append(append([]string(nil), asUser...), args...)
		cmd := exec.CommandContext(ctx, full[0], full[1:]...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w%s", filepath.Base(args[0]), err, tailOf(string(out)))
		}
		return nil
	}
	data := filepath.Join(dir, "data")
	if err := run(2*time.Minute, initdb, "-D", data, "-U", owner, "--auth=trust", "--no-sync", "-E", "UTF8"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	fs := "on"
	if !fsync {
		fs = "off"
	}
	opts := "-k " + dir + " -c listen_addresses='' -c fsync=" + fs + " -c max_connections=200"
	if err := run(2*time.Minute, pgctl, "-D", data, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "-o", opts, "start"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &pgServer{dsn: "postgres://" + owner + "@/postgres?host=" + url.QueryEscape(dir)}
	s.stopCluster = func() {
		full := append(append([]string(nil), asUser...), pgctl, "-D", data, "-m", "fast", "-w", "stop")
		exec.Command(full[0], full[1:]...).Run()
		os.RemoveAll(dir)
	}
	if b, err := os.ReadFile(filepath.Join(data, "postmaster.pid")); err == nil {
		s.pid, _ = strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	}
	return s, nil
}

// createDB makes a fresh database on the server and returns its DSN.
func (s *pgServer) createDB(ctx context.Context, prefix string) (string, error) {
	db, err := sql.Open("pgx", s.dsn)
	if err != nil {
		return "", err
	}
	defer db.Close()
	b := make([]byte, 4)
	rand.Read(b)
	name := "topcdn_scale_" + prefix + "_" + hex.EncodeToString(b)
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database: %w", err)
	}
	s.dbs = append(s.dbs, name)
	u, err := url.Parse(s.dsn)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

// stop drops the drill's databases and stops a throwaway cluster.
func (s *pgServer) stop() {
	if s.stopCluster != nil {
		s.stopCluster()
		return
	}
	db, err := sql.Open("pgx", s.dsn)
	if err != nil {
		return
	}
	defer db.Close()
	for _, name := range s.dbs {
		db.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	}
}
