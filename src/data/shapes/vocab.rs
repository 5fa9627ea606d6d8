//! The words of the shapes world: kinds, colours, sizes, grid positions and
//! backgrounds, each with the exact phrase captions use for it.

/// Defines a closed vocabulary enum with its caption word(s) and a lookup.
macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $word:expr),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The phrase captions use for this value.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }

            /// The value whose caption phrase is `phrase` (exact, lower case).
            pub fn from_name(phrase: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.name() == phrase)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

vocabulary!(
    /// The outline of an object. Objects are drawn upright (no rotation).
    Kind { Circle => "circle", Square => "square", Triangle => "triangle", Star => "star" }
);

vocabulary!(
    /// Object colours, picked far apart in RGB so that JPEG and resizing do
    /// not move a pixel from one to another.
    Color {
        Red => "red",
        Green => "green",
        Blue => "blue",
        Yellow => "yellow",
        Purple => "purple",
        Orange => "orange",
    }
);

vocabulary!(
    /// Background colours: none of them is an object colour.
    Background { White => "white", Black => "black", Gray => "gray" }
);

vocabulary!(
    /// Object sizes, as a fraction of the image side (see [`Size::extent`]).
    Size { Small => "small", Large => "large" }
);

vocabulary!(
    /// Cells of the 3x3 grid the image is divided into.
    Position {
        TopLeft => "top left",
        Top => "top",
        TopRight => "top right",
        Left => "left",
        Center => "center",
        Right => "right",
        BottomLeft => "bottom left",
        Bottom => "bottom",
        BottomRight => "bottom right",
    }
);

impl Color {
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Color::Red => [220, 30, 30],
            Color::Green => [30, 170, 50],
            Color::Blue => [30, 60, 220],
            Color::Yellow => [245, 225, 30],
            Color::Purple => [140, 40, 170],
            Color::Orange => [250, 135, 20],
        }
    }
}

impl Background {
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Background::White => [255, 255, 255],
            Background::Black => [0, 0, 0],
            Background::Gray => [128, 128, 128],
        }
    }
}

impl Size {
    /// Nominal side of the object's bounding box as a fraction of the image
    /// side; the generator jitters it by at most [`Size::JITTER`].
    pub fn extent(self) -> f64 {
        match self {
            Size::Small => 0.19,
            Size::Large => 0.29,
        }
    }

    /// Relative jitter of the extent (0.04 = plus or minus 4%); the largest
    /// large object plus margins still fits a grid cell.
    pub const JITTER: f64 = 0.04;

    /// The size whose extent range holds `extent` (split halfway between them).
    pub fn from_extent(extent: f64) -> Size {
        if extent < (Size::Small.extent() + Size::Large.extent()) / 2.0 {
            Size::Small
        } else {
            Size::Large
        }
    }
}

impl Position {
    /// (column, row) of the cell, each in 0..3.
    pub fn cell(self) -> (u32, u32) {
        let i = Position::ALL.iter().position(|p| *p == self).unwrap_or(4) as u32;
        (i % 3, i / 3)
    }

    pub fn from_cell(column: u32, row: u32) -> Position {
        Position::ALL[(row.min(2) * 3 + column.min(2)) as usize]
    }

    /// The cell holding the point (x, y) given as fractions of the image side.
    pub fn at(x: f64, y: f64) -> Position {
        let cell = |v: f64| (v * 3.0).floor().clamp(0.0, 2.0) as u32;
        Position::from_cell(cell(x), cell(y))
    }

    /// How captions introduce the position: "at the top left", "in the center".
    pub fn phrase(self) -> String {
        match self {
            Position::Center => "in the center".to_string(),
            p => format!("at the {}", p.name()),
        }
    }
}
