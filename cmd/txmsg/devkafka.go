package main

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/txmsg/txmsg/internal/kafkax"
)

const devkafkaSynopsis = `devkafka [--listen 127.0.0.1:9092] [--partitions 6] [--sasl-user U --sasl-password P]

Runs an in-process Kafka-protocol broker (franz-go's kfake) that creates
topics on first use. It keeps everything in memory: for development and tests
only. It prints its address on stdout and runs until SIGINT or SIGTERM.
With --sasl-user and --sasl-password every client must authenticate as that
user with SASL PLAIN or SCRAM-SHA-256 (kafka.sasl.* keys).`

func runDevKafka(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("devkafka", devkafkaSynopsis, e)
	listen := fs.String("listen", "127.0.0.1:9092", "HOST:PORT to listen on; port 0 picks a free one")
	partitions := fs.Int("partitions", 6, "partitions of each auto-created topic")
	user := fs.String("sasl-user", "", "require SASL (PLAIN or SCRAM-SHA-256) as this user")
	pass := fs.String("sasl-password", "", "the password of --sasl-user")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	opts, err := devSASL(*user, *pass)
	if err != nil {
		return err
	}
	c, err := startKafkaWith(*listen, *partitions, opts)
	if err != nil {
		return err
	}
	defer c.Close()
	addr := c.ListenAddrs()[0]
	fmt.Fprintln(e.stdout, addr)
	fmt.Fprintf(e.stderr, "txmsg devkafka: in-memory Kafka (kfake) on %s, %d partitions per new topic; for development only. Ctrl-C stops it.\n", addr, *partitions)
	if *user != "" {
		fmt.Fprintf(e.stderr, "txmsg devkafka: SASL required: user %q, mechanism %s or %s (set kafka.sasl.mechanism, kafka.sasl.username and kafka.sasl.password)\n",
			*user, kafkax.MechanismPlain, kafkax.MechanismScramSHA256)
	}
	<-ctx.Done()
	fmt.Fprintln(e.stderr, "txmsg devkafka: stopped")
	return nil
}

// devSASL returns the kfake options that require SASL as user, with PLAIN
// and SCRAM-SHA-256, or none when user is empty.
func devSASL(user, pass string) ([]kfake.Opt, error) {
	switch {
	case user == "" && pass == "":
		return nil, nil
	case user == "":
		return nil, usagef("--sasl-password needs --sasl-user")
	case pass == "":
		return nil, usagef("--sasl-user needs --sasl-password")
	}
	return []kfake.Opt{
		kfake.EnableSASL(),
		kfake.Superuser(kafkax.MechanismPlain, user, pass),
		kfake.Superuser(kafkax.MechanismScramSHA256, user, pass),
	}, nil
}

// startKafka starts a one-broker kfake cluster on listen (HOST:PORT) that
// creates topics of partitions partitions on first use, and topics at once.
func startKafka(listen string, partitions int, topics ...string) (*kfake.Cluster, error) {
	return startKafkaWith(listen, partitions, nil, topics...)
}

// startKafkaWith is startKafka with further kfake options, such as devSASL's.
func startKafkaWith(listen string, partitions int, extra []kfake.Opt, topics ...string) (*kfake.Cluster, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, usagef("--listen %q: want HOST:PORT", listen)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, usagef("--listen %q: port %q: want 0 to 65535", listen, portStr)
	}
	if partitions < 1 || partitions > 1000 {
		return nil, usagef("--partitions %d: want 1 to 1000", partitions)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(partitions),
		kfake.AllowAutoTopicCreation(),
		kfake.Ports(port),
		// kfake binds 127.0.0.1; bind the host asked for instead.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
		}),
	}
	if len(topics) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(partitions), topics...))
	}
	opts = append(opts, extra...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start Kafka on %s: %w", listen, err)
	}
	return c, nil
}
