"""nbgrader's course directory for the problem sets: instructor sources in solutions/, the release in exercises/."""
c = get_config()  # noqa: F821 (nbgrader provides get_config)
c.CourseDirectory.course_id = "exploding-gradients"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
# Each test cell's output is checked for errors only; a problem set's cells get this long to run.
c.ExecutePreprocessor.timeout = 120
