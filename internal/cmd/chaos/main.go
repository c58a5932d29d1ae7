package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/uuidforge/uuidforge/internal/testenv"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == workerCommand {
		os.Exit(runWorker(os.Args[2:]))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command-line flags.
type options struct {
	n               int
	orders          int
	scale           int
	procs           int
	measure         bool
	forget          bool
	clustersScript  string
	cpuProfile      string
	relays          int
	seed            uint64
	amqp            string
	postgres        string
	ctl             string
	restartPostgres string
	transports      string
	failRate        float64
	dropShare       float64
	timeout         time.Duration
	lease           time.Duration
	keep            bool
	noDedupe        bool
	verbose         bool
}

func (o options) rabbit() bool { return o.transports != "kafka" }
func (o options) kafka() bool  { return o.transports != "rabbitmq" }

// chances are the handlers' seeded failures and drops.
func (o options) chances() chances {
	return chances{seed: o.seed, failRate: o.failRate, dropShare: o.dropShare}
}

// clustersScript is scripts/clusters.sh next to this program's sources,
// or that path relative to the working directory when they are not there.
func clustersScript() string {
	const rel = "scripts/clusters.sh"
	if _, file, _, ok := runtime.Caller(0); ok {
		p := filepath.Join(filepath.Dir(file), "..", "..", "..", rel)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return rel
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.n, "n", 20000, "distinct messages of the message scenario, over both transports together (0: skip it)")
	fs.IntVar(&o.orders, "orders", 5000, "orders of the outbox scenario (0: skip it)")
	fs.IntVar(&o.scale, "scale", 0, "messages of the scale scenario (0: skip it)")
	fs.IntVar(&o.procs, "procs", 3, "scale scenario: consumer processes per transport (forwarders on the RabbitMQ queue, appliers in the Kafka group)")
	fs.BoolVar(&o.measure, "measure", false, "scale scenario: no faults; measure each transport's throughput (the forwarders drain the full queue, then the appliers the full topic)")
	fs.BoolVar(&o.forget, "forget", false, "scale scenario: halfway, delete the run's records in the Redis store, as a failover that lost its completions would (the run must then fail: shows the check works)")
	fs.StringVar(&o.clustersScript, "clusters", clustersScript(), "scripts/clusters.sh, which the scale scenario runs to check the clustered setups and put them back")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "directory where each worker process writes a CPU profile when it stops (ROLE-N.pprof)")
	fs.IntVar(&o.relays, "relays", 2, "outbox relay processes")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the copies, their order, the amounts and the handler failures")
	fs.StringVar(&o.amqp, "amqp", envOr(testenv.EnvAMQP, testenv.DefaultAMQPURL), "RabbitMQ URL of a user that may add users (default $"+testenv.EnvAMQP+")")
	fs.StringVar(&o.postgres, "postgres", envOr(testenv.EnvPostgres, testenv.DefaultPostgresURL), "PostgreSQL URL (default $"+testenv.EnvPostgres+")")
	fs.StringVar(&o.ctl, "rabbitmqctl", "rabbitmqctl", "rabbitmqctl command, used to add the run's user and close its connections")
	fs.StringVar(&o.restartPostgres, "restart-postgres", "", "shell command that restarts the PostgreSQL server, run once during the outbox scenario (empty: no restart; it disturbs every other user of the server)")
	fs.StringVar(&o.transports, "transports", "both", "message scenario: both, rabbitmq or kafka")
	fs.Float64Var(&o.failRate, "fail", 0.2, "fraction of handler attempts that fail")
	fs.Float64Var(&o.dropShare, "drop-share", 0, "fraction of messages the last handler acknowledges without their effect (the run must then fail: shows the check works)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up (and exit 1) after this long, per scenario")
	fs.DurationVar(&o.lease, "lease", 4*time.Second, "dedupe lease: how long a killed consumer's claims block their messages")
	fs.BoolVar(&o.keep, "keep", false, "keep the run's PostgreSQL tables for inspection")
	fs.BoolVar(&o.noDedupe, "no-dedupe", false, "consume without the dedupe middleware (the run must then fail: shows the check works)")
	fs.BoolVar(&o.verbose, "v", false, "show the workers' warnings")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	case o.n < 0 || o.orders < 0 || o.scale < 0 || o.n+o.orders+o.scale == 0:
		return o, fmt.Errorf("-n %d -orders %d -scale %d: need messages or orders", o.n, o.orders, o.scale)
	case o.procs < 1 || o.procs > scalePartitions:
		return o, fmt.Errorf("-procs %d: want 1 to %d", o.procs, scalePartitions)
	case o.forget && (o.scale == 0 || o.measure):
		return o, errors.New("-forget needs -scale, without -measure")
	case o.relays < 1:
		return o, fmt.Errorf("-relays %d: need at least one", o.relays)
	case o.transports != "both" && o.transports != "rabbitmq" && o.transports != "kafka":
		return o, fmt.Errorf("-transports %q: want both, rabbitmq or kafka", o.transports)
	case o.failRate < 0 || o.failRate > 0.9:
		return o, fmt.Errorf("-fail %v: want 0 to 0.9", o.failRate)
	case o.dropShare < 0 || o.dropShare > 0.5:
		return o, fmt.Errorf("-drop-share %v: want 0 to 0.5", o.dropShare)
	case o.lease < 500*time.Millisecond:
		return o, fmt.Errorf("-lease %v: want at least 500ms", o.lease)
	case o.timeout <= 0:
		return o, fmt.Errorf("-timeout %v", o.timeout)
	}
	return o, nil
}

// run is the coordinator: it sets up, runs the scenarios one after the
// other and prints their results.
// Exit status: 0 all counts right, 1 a count is off, 2 setup failed.
func run(args []string, stdout, stderr io.Writer) int {
	opt, err := parseOptions(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "chaos:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if opt.cpuProfile != "" {
		// The coordinator's profile: the in-process Kafka brokers run here.
		stopProfile, err := startCPUProfile(workerConfig{cpuProfile: opt.cpuProfile, role: "coordinator"})
		if err != nil {
			fmt.Fprintln(stderr, "chaos:", err)
			return 2
		}
		defer stopProfile()
	}

	var id [4]byte
	if _, err := rand.Read(id[:]); err != nil {
		fmt.Fprintln(stderr, "chaos:", err)
		return 2
	}
	e := &env{opt: opt, out: stdout, errOut: stderr, start: time.Now(), run: hex.EncodeToString(id[:])}
	defer e.cleanup()
	rabbit := opt.orders > 0 || (opt.n > 0 && opt.rabbit())
	kafka := opt.orders > 0 || (opt.n > 0 && opt.kafka())
	if err := e.setup(ctx, rabbit, kafka); err != nil {
		fmt.Fprintln(stderr, "chaos: setup:", err)
		return 2
	}
	var problems []string
	for _, sc := range []struct {
		on  bool
		run func(context.Context, *env) ([]string, error)
	}{{opt.n > 0, runMessages}, {opt.orders > 0, runOutbox}, {opt.scale > 0, runScale}} {
		if !sc.on || ctx.Err() != nil {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, opt.timeout)
		p, err := sc.run(sctx, e)
		cancel()
		if err != nil {
			fmt.Fprintln(stderr, "chaos: setup:", err)
			return 2
		}
		problems = append(problems, p...)
	}
	if ctx.Err() != nil {
		problems = append(problems, "interrupted")
	}
	if len(problems) > 0 {
		fmt.Fprintln(stderr, "chaos: FAILED: "+strings.Join(problems, "; "))
		return 1
	}
	return 0
}
