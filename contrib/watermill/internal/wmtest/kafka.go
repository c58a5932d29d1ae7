package wmtest

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka is an in-process Kafka-protocol broker (kfake) on a fixed port with
// a data directory, so that it can be stopped and started again with its
// topics, records and committed offsets, as a real broker restart.
type Kafka struct {
	port int
	dir  string

	mu      sync.Mutex
	cluster *kfake.Cluster
}

// StartKafka starts the broker for the test and stops it when the test
// ends. New topics get one partition unless created otherwise.
func StartKafka(t testing.TB) *Kafka {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		Unavailable(t, "Kafka (a free port)", err)
	}
	k := &Kafka{port: l.Addr().(*net.TCPAddr).Port, dir: t.TempDir()}
	_ = l.Close()
	if err := k.start(); err != nil {
		Unavailable(t, "Kafka", err)
	}
	t.Cleanup(func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.cluster.Close()
	})
	return k
}

func (k *Kafka) start() error {
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(1),
		kfake.Ports(k.port), kfake.DataDir(k.dir),
		// Members of a group whose broker went away must be able to come
		// back quickly: the consumers use short sessions.
		kfake.GroupMinSessionTimeout(time.Second),
	)
	if err != nil {
		return fmt.Errorf("start in-process kafka: %w", err)
	}
	k.cluster = c
	return nil
}

// Brokers returns the bootstrap address.
func (k *Kafka) Brokers() []string { return []string{"127.0.0.1:" + strconv.Itoa(k.port)} }

// Restart stops the broker and starts it again on the same port and data.
func (k *Kafka) Restart() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cluster.Close()
	time.Sleep(200 * time.Millisecond)
	var err error
	for range 50 { // the port may take a moment to be free again
		if err = k.start(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}
