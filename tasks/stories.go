package tasks

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"unicode"

	"github.com/iapt-go/iapt/dataset"
)

// Girls' and boys' names the story prompts use and the instruction
// derivation recognises: common in children's stories, none of them an
// everyday English word (no Rose, Daisy, Spot or Will), so that matching
// them case-insensitively does not find words that are not names.
var (
	girlNames = []string{"Lily", "Sue", "Lucy", "Amy", "Mia", "Sara", "Anna", "Emma", "Mary", "Sally",
		"Jane", "Kate", "Ella", "Zoe", "Molly", "Lisa", "Jenny", "Nina", "Susie", "Clara"}
	boyNames = []string{"Tim", "Tom", "Timmy", "Sam", "Jack", "Max", "Joe", "Ben", "Billy", "Bob",
		"Leo", "Jake", "Nick", "John", "Peter", "Danny", "Alex", "Toby", "Oliver", "Henry"}
)

// StoryObjects are the concrete nouns an instruction can ask for: things
// and animals of children's stories, with regular plurals (or none), and
// none of them a common verb (no swing, rock or train).
var StoryObjects = []string{
	"ball", "kite", "cake", "dog", "cat", "tree", "box", "car", "boat", "hat",
	"doll", "book", "bike", "apple", "flower", "bird", "fish", "frog", "duck", "bear",
	"bunny", "horse", "cow", "pig", "sheep", "truck", "balloon", "cookie", "pie", "shell",
	"leaf", "bug", "butterfly", "bee", "moon", "star", "blanket", "cup", "spoon", "sock",
	"shoe", "coat", "sandwich", "crown", "key", "map", "rope", "bucket", "basket", "egg",
	"owl", "lion", "monkey", "puppy", "kitten", "castle", "robot", "banana", "bell", "pencil",
}

// StoryNames are the names the stories task knows, girls' then boys'.
var StoryNames = append(append([]string(nil), girlNames...), boyNames...)

// StoryInstruction is the instruction asking for a story about name and
// object: "Write a story about Lily and a ball." ("an" before a vowel).
func StoryInstruction(name, object string) string {
	return fmt.Sprintf("Write a story about %s and %s.", name, withArticle(object))
}

// withArticle puts "a", or "an" before a vowel, in front of a noun.
func withArticle(noun string) string {
	if noun != "" && strings.ContainsRune("aeiou", rune(noun[0])) {
		return "an " + noun
	}
	return "a " + noun
}

var instructionRE = regexp.MustCompile(`^Write a story about ([A-Z][a-z]*) and an? ([a-z]+)\.$`)

// ParseStoryInstruction reads the name and object back from an instruction
// written by StoryInstruction (surrounding space allowed); ok is false for
// any other text.
func ParseStoryInstruction(instruction string) (name, object string, ok bool) {
	m := instructionRE.FindStringSubmatch(strings.TrimSpace(instruction))
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}

// words splits text into its runs of letters, so that "Lily's" yields
// "Lily" and "s" and punctuation never sticks to a word.
func words(text string) []string {
	return strings.FieldsFunc(text, func(r rune) bool { return !unicode.IsLetter(r) })
}

// isForm reports whether word (lower case) is noun or one of its plurals:
// +s, +es, consonant+y → ies, f → ves, fe → ves.
func isForm(word, noun string) bool {
	if word == noun || word == noun+"s" || word == noun+"es" {
		return true
	}
	n := len(noun)
	switch {
	case n >= 2 && noun[n-1] == 'y' && !strings.ContainsRune("aeiou", rune(noun[n-2])):
		return word == noun[:n-1]+"ies"
	case strings.HasSuffix(noun, "fe"):
		return word == noun[:n-2]+"ves"
	case strings.HasSuffix(noun, "f"):
		return word == noun[:n-1]+"ves"
	}
	return false
}

// StoryFollows reports whether story follows an instruction written by
// StoryInstruction: it names the name and the object (or its plural) as
// whole words, ignoring case. An instruction of another form never counts
// as followed.
func StoryFollows(instruction, story string) bool {
	name, object, ok := ParseStoryInstruction(instruction)
	if !ok {
		return false
	}
	name, object = strings.ToLower(name), strings.ToLower(object)
	hasName, hasObject := false, false
	for _, w := range words(story) {
		w = strings.ToLower(w)
		hasName = hasName || w == name
		hasObject = hasObject || isForm(w, object)
	}
	return hasName && hasObject
}

// mostFrequent returns the candidate counted most often by count over the
// words, ties going to the one that appears first; "" when none is counted
// atLeast times.
func mostFrequent(ws, candidates []string, atLeast int, count func(word, cand string) bool) string {
	best, bestN, bestFirst := "", 0, 0
	for _, c := range candidates {
		n, first := 0, -1
		for i, w := range ws {
			if count(w, c) {
				n++
				if first < 0 {
					first = i
				}
			}
		}
		if n >= atLeast && (n > bestN || (n == bestN && first < bestFirst)) {
			best, bestN, bestFirst = c, n, first
		}
	}
	return best
}

// Reasons DeriveStory gives for rejecting a story.
const (
	RejectNoName   = "no known name at least twice"
	RejectNoObject = "no known object"
	RejectShort    = "fewer than 3 sentences"
)

// DeriveStory makes a training story from generated text: the text cut to
// whole sentences, its main character (the known name written most often,
// capitalised, at least twice) and its object (the known object mentioned
// most often, plurals included; ties go to the earlier one). A non-empty
// reject says why the text is unusable.
func DeriveStory(text string) (s Story, reject string) {
	text, n := TrimToSentences(text)
	if n < 3 {
		return s, RejectShort
	}
	ws := words(text)
	name := mostFrequent(ws, StoryNames, 2, func(w, c string) bool { return w == c })
	if name == "" {
		return s, RejectNoName
	}
	lower := make([]string, len(ws))
	for i, w := range ws {
		lower[i] = strings.ToLower(w)
	}
	object := mostFrequent(lower, StoryObjects, 1, isForm)
	if object == "" {
		return s, RejectNoObject
	}
	return Story{Name: name, Object: object, Text: text}, ""
}

// TrimToSentences cuts text after its last complete sentence: a '.', '!' or
// '?' (with a closing quote, if any) followed by a space or the end, at a
// point where the double quotes are balanced. Spaces at the ends of lines
// are removed. It returns the text and its number of sentences.
func TrimToSentences(text string) (string, int) {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRightFunc(l, unicode.IsSpace)
	}
	text = strings.Join(lines, "\n")
	cut, n, quotes := 0, 0, 0
	for i := 0; i < len(text); i++ {
		c := text[i]
		if c == '"' {
			quotes++
		}
		if c != '.' && c != '!' && c != '?' {
			continue
		}
		end, q := i+1, quotes
		if end < len(text) && text[end] == '"' {
			end, q = end+1, q+1
		}
		if (end == len(text) || text[end] == ' ' || text[end] == '\n') && q%2 == 0 {
			cut = end
			n++
		}
	}
	return strings.TrimSpace(text[:cut]), n
}

// Story is a generated story with the instruction derived from it.
type Story struct {
	Name, Object, Text string
}

// Row is the story as an instruction-style data row.
func (s Story) Row() dataset.Row {
	return dataset.Row{Instruction: StoryInstruction(s.Name, s.Object), Response: s.Text}
}

// HeldOut are the names and objects kept out of training.
type HeldOut struct {
	Names, Objects []string
}

// holdOut picks values to hold out that together cover at most frac of the
// stories: it walks the values in a seeded random order (a shuffle of
// their sorted list) and takes each one that still fits. When none fits
// (every value is that frequent) and there are two or more, the rarest is
// taken, so that evaluation is not empty.
func holdOut(counts map[string]int, total int, frac float64, seed uint64) []string {
	all := make([]string, 0, len(counts))
	for v := range counts {
		all = append(all, v)
	}
	sort.Strings(all)
	dataset.Shuffle(all, seed)
	var held []string
	covered := 0
	for _, v := range all {
		if float64(covered+counts[v]) <= frac*float64(total) {
			held = append(held, v)
			covered += counts[v]
		}
	}
	if len(held) == 0 && len(all) >= 2 {
		rarest := all[0]
		for _, v := range all {
			if counts[v] < counts[rarest] || (counts[v] == counts[rarest] && v < rarest) {
				rarest = v
			}
		}
		held = []string{rarest}
	}
	sort.Strings(held)
	return held
}

// SplitHeldOut splits stories so that evaluation asks for what training
// never saw. Names are held out, in a random order drawn with seed, until
// they cover the fraction frac (in (0, 1)) of the stories; objects alike.
// A story whose name or object is held out goes to evaluation, every other
// story to training: no training story has a held-out name or object, so
// every evaluation (name, object) pair is unseen in training, and so is at
// least one of its two parts. With independent names and objects about
// 1-(1-frac)² of the stories go to evaluation. Stories keep their order.
func SplitHeldOut(stories []Story, frac float64, seed uint64) (train, eval []Story, held HeldOut, err error) {
	if !(frac > 0 && frac < 1) {
		return nil, nil, held, fmt.Errorf("stories: held-out fraction %v is outside (0, 1)", frac)
	}
	names, objects := map[string]int{}, map[string]int{}
	for _, s := range stories {
		names[s.Name]++
		objects[s.Object]++
	}
	held.Names = holdOut(names, len(stories), frac, seed)
	held.Objects = holdOut(objects, len(stories), frac, seed+1)
	for _, s := range stories {
		if slices.Contains(held.Names, s.Name) || slices.Contains(held.Objects, s.Object) {
			eval = append(eval, s)
		} else {
			train = append(train, s)
		}
	}
	return train, eval, held, nil
}

// StoryPrompts returns n story openings, drawn with seed: 8 in 10 name the
// main character (a name of StoryNames, drawn uniformly, so that every name
// has stories; the model's own choice is mostly Lily or Tim), 5 of those 8
// also give them an object of StoryObjects (drawn uniformly), and 2 in 10
// are plain openings such as "Once upon a time". The model then writes the
// story; DeriveStory reads the instruction back from it. The first n
// prompts do not depend on how many are drawn.
func StoryPrompts(n int, seed uint64) []string {
	plain := []string{"Once upon a time", "Once upon a time, there was", "One day,", "Once there was",
		"One sunny day,", "Long ago,", "Once upon a time, in a small town,", "Once upon a time, there lived"}
	named := []string{"Once upon a time, there was a little %[2]s named %[1]s.", "Once upon a time, there was a %[2]s named %[1]s.",
		"One day, %[1]s", "%[1]s was a little %[2]s who", "Once upon a time, %[1]s", "One sunny day, %[1]s"}
	withObject := []string{"Once upon a time, there was a little %[2]s named %[1]s. %[3]s had %[4]s.",
		"One day, %[1]s found %[4]s.", "%[1]s wanted %[4]s.", "Once upon a time, %[1]s saw %[4]s.",
		"%[1]s loved %[5]s %[6]s.", "One morning, %[1]s looked for %[5]s %[6]s."}
	r := dataset.NewRand(seed)
	pick := func(xs []string) string { return xs[r.IntN(len(xs))] }
	out := make([]string, max(n, 0))
	for i := range out {
		kind := r.IntN(10)
		if kind < 2 {
			out[i] = pick(plain)
			continue
		}
		name := pick(StoryNames)
		child, pron, poss := "girl", "She", "her"
		if slices.Contains(boyNames, name) {
			child, pron, poss = "boy", "He", "his"
		}
		if kind < 5 {
			out[i] = fmt.Sprintf(pick(named), name, child)
			continue
		}
		obj := pick(StoryObjects)
		out[i] = fmt.Sprintf(pick(withObject), name, child, pron, withArticle(obj), poss, obj)
	}
	return out
}
