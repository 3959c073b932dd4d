package limits

// FullFor is fullFor, for tests.
var FullFor = fullFor
