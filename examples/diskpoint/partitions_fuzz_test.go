package main

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"
	"time"
)

// mbrWith returns a 1 MiB disk whose MBR has one partition of type typ.
func mbrWith(typ byte, startSector, sectors uint32) []byte {
	disk := make([]byte, 1<<20)
	entry := disk[446:462]
	entry[4] = typ
	binary.LittleEndian.PutUint32(entry[8:], startSector)
	binary.LittleEndian.PutUint32(entry[12:], sectors)
	disk[510], disk[511] = 0x55, 0xaa
	return disk
}

// gptWith returns a 1 MiB disk with a protective MBR and a GPT header
// (with a correct checksum) whose array has count entries of size bytes.
func gptWith(count, size uint32) []byte {
	disk := mbrWith(0xee, 1, 2047)
	h := disk[512:604]
	copy(h, "EFI PART")
	copy(h[8:], []byte{0, 0, 1, 0})
	binary.LittleEndian.PutUint32(h[12:], 92)
	binary.LittleEndian.PutUint64(h[24:], 1)
	binary.LittleEndian.PutUint64(h[32:], 2047)
	binary.LittleEndian.PutUint64(h[40:], 34)
	binary.LittleEndian.PutUint64(h[48:], 2014)
	binary.LittleEndian.PutUint64(h[72:], 2)
	binary.LittleEndian.PutUint32(h[80:], count)
	binary.LittleEndian.PutUint32(h[84:], size)
	binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(disk[1024:1024+int(min(count*size, 1<<19))]))
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h))
	return disk
}

// Partition tables come from restore points, so from anywhere: reading one
// never panics, and every partition it returns lies within the disk.
func FuzzPartitionTable(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 4096))
	f.Add(mbrWith(0x83, 2048, 100))
	f.Add(mbrWith(0x83, 2048, 1<<30))
	f.Add(mbrWith(0xee, 1, 2047))
	gpt := mbrWith(0xee, 1, 2047)
	copy(gpt[512:], "EFI PART")
	f.Add(gpt)
	f.Add(gptWith(128, 128))
	f.Add(gptWith(1, 0))
	f.Fuzz(func(t *testing.T, disk []byte) {
		parts, err := readPartitions(bytes.NewReader(disk), int64(len(disk)))
		if err != nil {
			return
		}
		for _, p := range parts {
			if p.Start <= 0 || p.Size <= 0 || p.Start+p.Size > int64(len(disk)) {
				t.Fatalf("partition %+v lies outside the %d-byte disk", p, len(disk))
			}
		}
	})
}

// A GPT header whose array go-diskfs would loop over forever (entries of 0
// bytes) or allocate without bound for is refused.
func TestPartitionTableHostileGPT(t *testing.T) {
	if _, err := readPartitions(bytes.NewReader(gptWith(128, 128)), 1<<20); err != nil {
		t.Fatalf("an empty GPT: %v", err)
	}
	for _, c := range [][2]uint32{{1, 0}, {1 << 31, 128}, {128, 1 << 20}, {128, 100}} {
		done := make(chan error, 1)
		go func() {
			_, err := readPartitions(bytes.NewReader(gptWith(c[0], c[1])), 1<<20)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("a GPT of %d entries of %d bytes was read", c[0], c[1])
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("a GPT of %d entries of %d bytes is still being read after 10s", c[0], c[1])
		}
	}
}

// An MBR partition past the disk's end is refused, and one within it read.
func TestPartitionTableBounds(t *testing.T) {
	parts, err := readPartitions(bytes.NewReader(mbrWith(0x83, 1024, 512)), 1<<20)
	if err != nil || len(parts) != 1 || parts[0].Start != 1024*512 || parts[0].Size != 512*512 || parts[0].Number != 1 {
		t.Errorf("an MBR partition at sector 1024 of 512 sectors read as %+v, %v", parts, err)
	}
	if _, err := readPartitions(bytes.NewReader(mbrWith(0x83, 1024, 4096)), 1<<20); err == nil {
		t.Error("an MBR partition past the disk's end was accepted")
	}
	if _, err := readPartitions(bytes.NewReader(make([]byte, 1<<20)), 1<<20); err != errNoPartitionTable {
		t.Errorf("a disk of zeros: %v, want errNoPartitionTable", err)
	}
}
