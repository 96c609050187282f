package txmsg

// Shard maps a key to one of n shards (n >= 1) with Kafka's murmur2 hash, the
// one Java producers and kafka-go's Murmur2Balancer use. Messages of one key
// share a shard, and a shard has one relay at a time: that is what keeps them
// in order. A nil key falls back to id, spreading keyless messages evenly.
func Shard(key []byte, id string, n int) int {
	if n <= 1 {
		return 0
	}
	if key == nil {
		key = []byte(id)
	}
	return int(murmur2(key)&0x7fffffff) % n
}

// murmur2 is Kafka's Utils.murmur2.
func murmur2(data []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	length := len(data)
	h := seed ^ uint32(length)
	n := length / 4
	for i := 0; i < n; i++ {
		j := i * 4
		k := uint32(data[j]) | uint32(data[j+1])<<8 | uint32(data[j+2])<<16 | uint32(data[j+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := data[n*4:]
	switch len(tail) {
	case 3:
		h ^= uint32(tail[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(tail[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(tail[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
