package planner

// Chunk is a run of consecutive record families: the roots of the first
// and the last, how many families and records it holds and, when the
// Chunker lists them, every root in order.
type Chunk struct {
	First, Last string
	Families    int
	Records     int64
	Roots       []string // only with Chunker.ListRoots
}

// Chunker packs record families, added in order, into chunks of about Size
// records: a family joins the last chunk unless that one already holds Size
// records or more, so a chunk never splits a family and only a family
// bigger than Size, or families joined to it (Join), make a chunk bigger
// than Size. Both kinds of job chunk with it: a full job by root id range,
// an incremental one by root list.
type Chunker struct {
	Size      int64 // records per chunk
	ListRoots bool  // keep each chunk's roots, not only its first and last
	chunks    []Chunk
}

// Add appends the family of root, of n records.
func (c *Chunker) Add(root string, n int64) {
	if len(c.chunks) > 0 && c.chunks[len(c.chunks)-1].Records >= c.Size {
		c.chunks = append(c.chunks, Chunk{First: root})
	}
	c.Join(root, n)
}

// Join appends the family of root, of n records, to the last chunk,
// whatever its size: families that must be written in one transaction
// are added with Add for the first and Join for the others.
func (c *Chunker) Join(root string, n int64) {
	if len(c.chunks) == 0 {
		c.chunks = append(c.chunks, Chunk{First: root})
	}
	last := &c.chunks[len(c.chunks)-1]
	last.Last = root
	last.Families++
	last.Records += n
	if c.ListRoots {
		last.Roots = append(last.Roots, root)
	}
}

// Chunks returns the chunks so far, in the order their families were added.
func (c *Chunker) Chunks() []Chunk { return c.chunks }

// Families counts the families added.
func (c *Chunker) Families() int {
	n := 0
	for _, ch := range c.chunks {
		n += ch.Families
	}
	return n
}
