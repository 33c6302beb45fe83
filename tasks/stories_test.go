package tasks

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestStoryInstructionRoundTrip(t *testing.T) {
	for _, c := range []struct{ name, object, text string }{
		{"Lily", "ball", "Write a story about Lily and a ball."},
		{"Tom", "apple", "Write a story about Tom and an apple."},
		{"Oliver", "owl", "Write a story about Oliver and an owl."},
	} {
		if got := StoryInstruction(c.name, c.object); got != c.text {
			t.Errorf("StoryInstruction(%q, %q) = %q, want %q", c.name, c.object, got, c.text)
		}
		name, object, ok := ParseStoryInstruction(" " + c.text + "\n")
		if !ok || name != c.name || object != c.object {
			t.Errorf("ParseStoryInstruction(%q) = %q, %q, %v", c.text, name, object, ok)
		}
	}
	for _, bad := range []string{"", "Write a story about Lily.", "Write a story about lily and a ball.", "Write a story about Lily and a ball", "Tell me about Lily and a ball."} {
		if _, _, ok := ParseStoryInstruction(bad); ok {
			t.Errorf("ParseStoryInstruction(%q) accepted", bad)
		}
	}
	if len(StoryObjects) != 60 || len(StoryNames) != 40 {
		t.Fatalf("%d objects, %d names; want 60 and 40", len(StoryObjects), len(StoryNames))
	}
	for _, list := range [][]string{StoryObjects, StoryNames} {
		s := slices.Clone(list)
		slices.Sort(s)
		if len(slices.Compact(s)) != len(list) {
			t.Fatalf("duplicates in %v", list)
		}
	}
}

func TestStoryFollows(t *testing.T) {
	instr := StoryInstruction("Tim", "puppy")
	for _, c := range []struct {
		story string
		want  bool
	}{
		{"Tim had a puppy.", true},
		{"TIM saw two PUPPIES in the park.", true},
		{"Tim's puppy ran. ", true},
		{"Timmy had a puppy.", false}, // Timmy is not Tim
		{"Tim had a dog.", false},
		{"The puppy was happy.", false},
		{"Tim ate puppyish food.", false}, // not a whole word
		{"", false},
	} {
		if got := StoryFollows(instr, c.story); got != c.want {
			t.Errorf("StoryFollows(%q, %q) = %v, want %v", instr, c.story, got, c.want)
		}
	}
	plurals := map[string]string{"box": "boxes", "leaf": "leaves", "butterfly": "butterflies", "monkey": "monkeys", "sheep": "sheep", "sandwich": "sandwiches", "ball": "balls"}
	for obj, pl := range plurals {
		if !StoryFollows(StoryInstruction("Sue", obj), "Sue saw many "+pl+".") {
			t.Errorf("plural %q of %q not recognised", pl, obj)
		}
	}
	if StoryFollows(StoryInstruction("Sue", "monkey"), "Sue saw monkies.") || StoryFollows(StoryInstruction("Sue", "ball"), "Sue went to the ballet.") {
		t.Error("a word that is not a form of the object counted")
	}
	if StoryFollows("Write about Tim and a puppy.", "Tim had a puppy.") {
		t.Error("an instruction of another form counted as followed")
	}
}

func TestTrimToSentences(t *testing.T) {
	for _, c := range []struct {
		in, want string
		n        int
	}{
		{"Tom ran. He fell down. Then he", "Tom ran. He fell down.", 2},
		{`Sue said, "Let's go. We can play`, "", 0},
		{`Sue said, "Let's go. We can play." Then they`, `Sue said, "Let's go. We can play."`, 1},
		{"It was fun!  \nThe end.", "It was fun!\nThe end.", 2},
		{`"Yes!" said Tom. "No`, `"Yes!" said Tom.`, 2},
		{"Is it 3.5 feet? Yes", "Is it 3.5 feet?", 1},
		{"no sentence at all", "", 0},
	} {
		got, n := TrimToSentences(c.in)
		if got != c.want || n != c.n {
			t.Errorf("TrimToSentences(%q) = %q, %d; want %q, %d", c.in, got, n, c.want, c.n)
		}
	}
}

func TestDeriveStory(t *testing.T) {
	s, reject := DeriveStory("Once upon a time, there was a girl named Lily. Lily had a red ball and a kite. " +
		"Tom came to play. Lily threw the ball to Tom. The balls bounced. Then the kite flew away and Lily")
	want := Story{Name: "Lily", Object: "ball", Text: "Once upon a time, there was a girl named Lily. Lily had a red ball and a kite. " +
		"Tom came to play. Lily threw the ball to Tom. The balls bounced."}
	if reject != "" || s != want {
		t.Fatalf("DeriveStory = %+v %q, want %+v", s, reject, want)
	}
	if !StoryFollows(s.Row().Instruction, s.Row().Response) || s.Row().Instruction != "Write a story about Lily and a ball." {
		t.Fatalf("row %+v", s.Row())
	}
	// Ties go to the earlier name and object.
	s, _ = DeriveStory("Ben saw Sam. Sam saw Ben. They found a cup and a hat. It was fun.")
	if s.Name != "Ben" || s.Object != "cup" {
		t.Fatalf("ties: %+v", s)
	}
	// Lower-case "max" is a word, not the name; a name needs two mentions.
	for _, c := range []struct{ text, reject string }{
		{"Max had a dog. The dog ran. It was the max speed. The end.", RejectNoName},
		{"Zoe sat. Zoe sang. Zoe slept.", RejectNoObject},
		{"Zoe had a cat. Zoe sang", RejectShort},
	} {
		if _, got := DeriveStory(c.text); got != c.reject {
			t.Errorf("DeriveStory(%q) rejected with %q, want %q", c.text, got, c.reject)
		}
	}
}

func TestSplitHeldOut(t *testing.T) {
	var stories []Story
	for i := 0; i < 600; i++ {
		stories = append(stories, Story{Name: StoryNames[(i*7)%len(StoryNames)], Object: StoryObjects[(i*13)%len(StoryObjects)], Text: "t"})
	}
	train, eval, held, err := SplitHeldOut(stories, 0.2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(held.Names) != 8 || len(held.Objects) != 12 || len(train)+len(eval) != len(stories) || len(eval) == 0 || len(train) == 0 {
		t.Fatalf("held %v; %d train, %d eval", held, len(train), len(eval))
	}
	trainPairs, trainNames, trainObjects := map[[2]string]bool{}, map[string]bool{}, map[string]bool{}
	for _, s := range train {
		trainPairs[[2]string{s.Name, s.Object}] = true
		trainNames[s.Name], trainObjects[s.Object] = true, true
		if slices.Contains(held.Names, s.Name) || slices.Contains(held.Objects, s.Object) {
			t.Fatalf("training story %+v has a held-out name or object", s)
		}
	}
	for _, s := range eval {
		if trainPairs[[2]string{s.Name, s.Object}] || (trainNames[s.Name] && trainObjects[s.Object]) {
			t.Fatalf("evaluation story %+v: its pair, or both its parts, are in training", s)
		}
	}
	train2, eval2, held2, _ := SplitHeldOut(stories, 0.2, 3)
	if !reflect.DeepEqual(train, train2) || !reflect.DeepEqual(eval, eval2) || !reflect.DeepEqual(held, held2) {
		t.Fatal("same seed, different split")
	}
	if _, _, held3, _ := SplitHeldOut(stories, 0.2, 4); reflect.DeepEqual(held, held3) {
		t.Fatal("seeds 3 and 4 held out the same names and objects")
	}
	// Held-out values cover at most the fraction of the stories: a name
	// with half of them is never held out at 0.2; the rest fill the share.
	skewed := slices.Clone(stories)
	for i := 0; i < len(skewed); i += 2 {
		skewed[i].Name = "Lily"
	}
	_, _, held, _ = SplitHeldOut(skewed, 0.2, 3)
	heldNames := 0
	for _, s := range skewed {
		if slices.Contains(held.Names, s.Name) {
			heldNames++
		}
	}
	if slices.Contains(held.Names, "Lily") || heldNames > 120 || heldNames < 100 {
		t.Fatalf("held out names %v cover %d of 600 stories, want 100..120 and not Lily", held.Names, heldNames)
	}
	// When every value is too frequent, the rarest one is held out.
	few := []Story{{Name: "Tom", Object: "cup"}, {Name: "Tom", Object: "cup"}, {Name: "Sue", Object: "hat"}}
	if _, eval, held, _ := SplitHeldOut(few, 0.1, 1); !reflect.DeepEqual(held, HeldOut{Names: []string{"Sue"}, Objects: []string{"hat"}}) || len(eval) != 1 {
		t.Fatalf("held %v, eval %v", held, eval)
	}
	for _, f := range []float64{0, 1, -1} {
		if _, _, _, err := SplitHeldOut(stories, f, 1); err == nil {
			t.Errorf("fraction %v accepted", f)
		}
	}
}

func TestStoryPrompts(t *testing.T) {
	a, b := StoryPrompts(300, 9), StoryPrompts(400, 9)
	if !reflect.DeepEqual(a, b[:300]) {
		t.Fatal("StoryPrompts(300) is not a prefix of StoryPrompts(400) with the same seed")
	}
	if reflect.DeepEqual(a, StoryPrompts(300, 10)) {
		t.Fatal("seeds 9 and 10 gave the same prompts")
	}
	named := 0
	names := map[string]bool{}
	for _, p := range a {
		if strings.Contains(p, "%!") || strings.TrimSpace(p) != p {
			t.Fatalf("malformed prompt %q", p)
		}
		for _, w := range words(p) {
			if slices.Contains(StoryNames, w) {
				names[w] = true
				named++
				break
			}
		}
	}
	if named < 200 || len(names) < 35 {
		t.Fatalf("%d of 300 prompts name someone, %d distinct names; want most and nearly all names", named, len(names))
	}
}
