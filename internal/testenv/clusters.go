package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Environment variables naming the clustered setups, and their defaults: the
// loopback setups scripts/clusters.sh starts (make test runs it through
// scripts/services.sh).
const (
	EnvRedisCluster        = "REDIS_CLUSTER_ADDRS"   // comma-separated host:port
	EnvRedisSentinel       = "REDIS_SENTINEL_ADDRS"  // comma-separated host:port of the Sentinels
	EnvRedisSentinelMaster = "REDIS_SENTINEL_MASTER" // the master name the Sentinels watch
	EnvAMQPCluster         = "AMQP_CLUSTER_URLS"     // comma-separated, one URL per node
	EnvAMQPClusterNodes    = "AMQP_CLUSTER_NODES"    // comma-separated node names, in the order of the URLs

	DefaultRedisClusterAddrs   = "127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003,127.0.0.1:7004,127.0.0.1:7005"
	DefaultRedisSentinelAddrs  = "127.0.0.1:26380,127.0.0.1:26381,127.0.0.1:26382"
	DefaultRedisSentinelMaster = "uuidforge"
	DefaultAMQPClusterURLs     = "amqp://guest:guest@127.0.0.1:5681/,amqp://guest:guest@127.0.0.1:5682/,amqp://guest:guest@127.0.0.1:5683/"
	DefaultAMQPClusterNodes    = "uf1@localhost,uf2@localhost,uf3@localhost"
)

// nodeName matches what may be passed to rabbitmqctl -n (see safeArg).
var nodeName = regexp.MustCompile(`^[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+$`)

func list(env, def string) []string {
	var out []string
	for _, s := range strings.Split(lookup(env, def), ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func dialAll(addrs []string) error {
	for _, a := range addrs {
		c, err := net.DialTimeout("tcp", a, 2*time.Second)
		if err != nil {
			return err
		}
		c.Close()
	}
	return nil
}

// RedisClusterAddrs returns the seed addresses of the Redis Cluster (see
// [EnvRedisCluster]) after checking that every node accepts TCP connections.
func RedisClusterAddrs(t testing.TB) []string {
	t.Helper()
	addrs := list(EnvRedisCluster, DefaultRedisClusterAddrs)
	if err := dialAll(addrs); err != nil {
		Unavailable(t, "Redis Cluster ("+EnvRedisCluster+")", fmt.Errorf("%w (scripts/clusters.sh start redis-cluster)", err))
	}
	lockSetup(t, SetupRedisCluster)
	return addrs
}

// Sentinel is a Redis primary with a replica, watched by Sentinels.
// Its methods are for one test; the setup is shared with other tests until a
// method that disrupts it makes the test its only user.
type Sentinel struct {
	// Addrs are the Sentinels' addresses.
	Addrs []string
	// Master is the name the Sentinels know the primary by.
	Master string

	lock *setupLock
}

// RedisSentinel returns the Sentinel setup (see [EnvRedisSentinel] and
// [EnvRedisSentinelMaster]) after checking that every Sentinel accepts TCP
// connections.
func RedisSentinel(t testing.TB) *Sentinel {
	t.Helper()
	s := &Sentinel{
		Addrs:  list(EnvRedisSentinel, DefaultRedisSentinelAddrs),
		Master: lookup(EnvRedisSentinelMaster, DefaultRedisSentinelMaster),
	}
	if err := dialAll(s.Addrs); err != nil {
		Unavailable(t, "Redis Sentinel ("+EnvRedisSentinel+")", fmt.Errorf("%w (scripts/clusters.sh start sentinel)", err))
	}
	s.lock = lockSetup(t, SetupSentinel)
	return s
}

// Primary returns the address the Sentinels give for the primary.
func (s *Sentinel) Primary(ctx context.Context) (string, error) {
	var errs []error
	for _, a := range s.Addrs {
		c := redis.NewSentinelClient(&redis.Options{Addr: a, DialTimeout: 2 * time.Second})
		addr, err := c.GetMasterAddrByName(ctx, s.Master).Result()
		c.Close()
		if err == nil && len(addr) == 2 {
			return net.JoinHostPort(addr[0], addr[1]), nil
		}
		errs = append(errs, fmt.Errorf("sentinel %s: %v", a, err))
	}
	return "", fmt.Errorf("testenv: no Sentinel names the primary of %s: %w", s.Master, errors.Join(errs...))
}

// KillPrimary kills the current primary (SIGKILL when it runs on this
// machine, else SHUTDOWN NOSAVE NOW) and waits until the Sentinels have
// promoted another server, whose address it returns with the old one. The
// test becomes the setup's only user (waiting for the others to finish) and
// the setup is put back when the test ends (see [Sentinel.Restore]).
// Only the local setup of scripts/clusters.sh can be put back, so
// KillPrimary needs [EnvRedisSentinel] unset.
func (s *Sentinel) KillPrimary(t testing.TB) (oldPrimary, newPrimary string) {
	t.Helper()
	if os.Getenv(EnvRedisSentinel) != "" {
		Unavailable(t, "the local Redis Sentinel setup", fmt.Errorf("%s is set: KillPrimary only disrupts the setup of scripts/clusters.sh", EnvRedisSentinel))
	}
	s.lock.exclusive(t, SetupSentinel)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	old, err := s.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Restore(t) })
	c := redis.NewClient(&redis.Options{Addr: old, DialTimeout: 2 * time.Second})
	defer c.Close()
	killed := false
	if info, err := c.Info(ctx, "server").Result(); err == nil && isLoopback(old) {
		if pid, err := strconv.Atoi(infoField(info, "process_id")); err == nil && pid > 1 {
			killed = killProcess(pid)
		}
	}
	if !killed {
		// The server closes the connection without a reply.
		_ = c.Do(ctx, "SHUTDOWN", "NOSAVE", "NOW").Err()
	}
	for {
		p, err := s.Primary(ctx)
		if err == nil && p != old && role(ctx, p) == "master" {
			return old, p
		}
		if ctx.Err() != nil {
			t.Fatalf("testenv: no new primary for %s within a minute of killing %s (last answer %q, %v)", s.Master, old, p, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Restore brings back the servers of the local setup that are down (a killed
// primary comes back as a replica of the new one) and waits until the setup
// is healthy again, with scripts/clusters.sh.
func (s *Sentinel) Restore(t testing.TB) {
	t.Helper()
	runClusters(t, "start", "sentinel")
}

func role(ctx context.Context, addr string) string {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 2 * time.Second, MaxRetries: -1})
	defer c.Close()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return ""
	}
	return infoField(info, "role")
}

// infoField returns the value of name in the text of Redis INFO.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// RabbitNodes is a RabbitMQ cluster whose nodes rabbitmqctl can reach.
// Its methods are for one test; the cluster is shared with other tests until
// a method that disrupts it makes the test its only user.
type RabbitNodes struct {
	// URLs has one AMQP URL per node.
	URLs []string
	// Nodes has the node names, in the order of URLs.
	Nodes []string

	ctl  string
	lock *setupLock
}

// RabbitCluster returns the RabbitMQ cluster (see [EnvAMQPCluster] and
// [EnvAMQPClusterNodes]) after checking that every node accepts TCP
// connections.
func RabbitCluster(t testing.TB) *RabbitNodes {
	t.Helper()
	c := &RabbitNodes{
		URLs:  list(EnvAMQPCluster, DefaultAMQPClusterURLs),
		Nodes: list(EnvAMQPClusterNodes, DefaultAMQPClusterNodes),
	}
	if len(c.URLs) != len(c.Nodes) {
		t.Fatalf("testenv: %s has %d URLs and %s %d nodes", EnvAMQPCluster, len(c.URLs), EnvAMQPClusterNodes, len(c.Nodes))
	}
	for _, u := range c.URLs {
		if err := dialURL(u, "5672"); err != nil {
			Unavailable(t, fmt.Sprintf("RabbitMQ cluster (%s=%s)", EnvAMQPCluster, RedactURL(u)), fmt.Errorf("%w (scripts/clusters.sh start rabbitmq)", err))
		}
	}
	for _, n := range c.Nodes {
		if !nodeName.MatchString(n) {
			t.Fatalf("testenv: %s: node name %q: unsupported characters", EnvAMQPClusterNodes, n)
		}
	}
	c.ctl = Tool(t, "rabbitmqctl")
	c.lock = lockSetup(t, SetupRabbitCluster)
	return c
}

// Ctl runs rabbitmqctl against node i and returns its output.
func (c *RabbitNodes) Ctl(ctx context.Context, i int, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.ctl, append([]string{"-n", c.Nodes[i], "-q"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("testenv: rabbitmqctl -n %s %s: %w: %s", c.Nodes[i], strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// StopNode stops the RabbitMQ application on node i (rabbitmqctl stop_app:
// its clients are disconnected and its queue replicas stop), waiting first
// for the other tests using the cluster to finish. The node is started again
// when the test ends if it is still stopped.
func (c *RabbitNodes) StopNode(t testing.TB, i int) {
	t.Helper()
	c.lock.exclusive(t, SetupRabbitCluster)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Cleanup(func() { c.StartNode(t, i) })
	if _, err := c.Ctl(ctx, i, "stop_app"); err != nil {
		t.Fatal(err)
	}
}

// StartNode starts the RabbitMQ application on node i and waits until it
// runs (a node that runs already is left alone).
func (c *RabbitNodes) StartNode(t testing.TB, i int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.Ctl(ctx, i, "start_app"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ctl(ctx, i, "await_startup"); err != nil {
		t.Fatal(err)
	}
}

// NewUser adds a user for this test on the cluster (see [NewRabbitUser]).
// Its URL logs in on the first node; the same credentials work on every node.
func (c *RabbitNodes) NewUser(t testing.TB) *RabbitUser {
	t.Helper()
	return newRabbitUser(t, []string{c.ctl, "-n", c.Nodes[0]}, c.URLs[0])
}

// runClusters runs scripts/clusters.sh with args.
func runClusters(t testing.TB, args ...string) {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "scripts", "clusters.sh")
	if _, err := os.Stat(script); !ok || err != nil {
		t.Fatalf("testenv: scripts/clusters.sh not found next to the sources (%v)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: clusters.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
